"""Inspect model API "teachwhy": `get_model("teachwhy/<spec>")` generates with a local model loaded
by `teachwhy.models.load(spec)` (the embedded model, a Hugging Face directory, or base + PEFT adapter).

Importing this module registers the provider (teachwhy.evals.suites.agentic.task imports it). Each (spec, dtype)
is loaded once per process (onto CUDA when available, or `-M device=...`) and served by one worker
thread, which batches concurrent requests that share generation settings (`-M batch_size=N`;
default 1 on CPU, 16 on CUDA; a batch gathers until it is full or no request has come for 0.1 s)
and decodes them with teachwhy.decode: each distinct prompt prefilled once and kept for later
epochs (`-M prompt_cache_mb=512`; 0 keeps none), one decode loop per batch.
`-M decode=exact` (the default) keeps transformers' generate() arithmetic, so greedy tokens match it
for one prompt at a time (batch_size 1, or rows of equal length; padded rows of different lengths get
a mask, and with it the folded attention kernel, which rounds differently);
`fast` folds the attention heads (faster on the CPU; a greedy token may differ at a near tie);
`generate` calls generate() itself. Models teachwhy.decode does not handle always use generate().
Stop sequences (GenerateConfig.stop_seqs) end a reply, which is cut before the first one.

Tools offered by Inspect are ignored: the scenario's system prompt already describes the text-tag
form, and the reply is returned as plain text. Tool results in the history are shown as user text.

Sampling: temperature 1.0 unless GenerateConfig says otherwise (0 means greedy); max_tokens 384
unless set. With `seed`, each request is seeded from (seed, prompt, how many times this process has
seen that prompt), so with batch_size 1 a rerun gives the same set of completions per scenario.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from inspect_ai.model import (
    ChatCompletionChoice,
    ChatMessage,
    ChatMessageAssistant,
    ChatMessageTool,
    GenerateConfig,
    ModelAPI,
    ModelOutput,
    ModelUsage,
    StopReason,
    modelapi,
)
from inspect_ai.tool import ToolChoice, ToolInfo

from teachwhy import models
from teachwhy.errors import UserError

DEFAULT_MAX_TOKENS = models.GENERATE_MAX_TOKENS
DEFAULT_TEMPERATURE = 1.0


@dataclass(frozen=True)
class GenParams:
    max_tokens: int
    temperature: float
    top_p: float | None
    top_k: int | None
    stop: tuple[str, ...]
    seed: int | None

    @classmethod
    def from_config(cls, config: GenerateConfig) -> GenParams:
        return cls(
            max_tokens=config.max_tokens or DEFAULT_MAX_TOKENS,
            temperature=DEFAULT_TEMPERATURE if config.temperature is None else float(config.temperature),
            top_p=config.top_p,
            top_k=config.top_k,
            stop=tuple(config.stop_seqs or ()),
            seed=config.seed,
        )

    def batch_key(self) -> tuple:
        return (self.max_tokens, self.temperature, self.top_p, self.top_k, self.stop)


@dataclass
class Completion:
    text: str
    input_tokens: int
    output_tokens: int
    stop_reason: StopReason  # "stop" | "max_tokens"


# ---------------------------------------------------------------------------------------------
# chat rendering


def chat_dicts(messages: list[ChatMessage]) -> list[dict[str, str]]:
    """Inspect messages as plain role/content dicts for a chat template; consecutive messages of
    one role are merged (some templates insist on alternation)."""
    out: list[dict[str, str]] = []
    for m in messages:
        role, text = m.role, m.text
        if isinstance(m, ChatMessageAssistant) and m.tool_calls:
            calls = [
                "<tool_call>" + json.dumps({"name": c.function, "arguments": c.arguments}) + "</tool_call>"
                for c in m.tool_calls
            ]
            text = "\n".join([text, *calls]).strip()
        elif isinstance(m, ChatMessageTool):
            role = "user"
            text = f"[result of {m.function or 'tool'}]\n{text}"
        if out and out[-1]["role"] == role:
            out[-1]["content"] += "\n\n" + text
        else:
            out.append({"role": role, "content": text})
    return out


def render_prompt(tokenizer: Any, messages: list[ChatMessage]) -> str:
    dicts = chat_dicts(messages)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(dicts, tokenize=False, add_generation_prompt=True)
    return "".join(f"{d['role']}: {d['content']}\n" for d in dicts) + "assistant: "


# ---------------------------------------------------------------------------------------------
# the engine: one loaded model, one worker thread


@dataclass
class _Request:
    prompt: str
    params: GenParams
    seed: int | None
    future: concurrent.futures.Future


DECODES = ("exact", "fast", "generate")
PROMPT_CACHE_MB = 512
# with batch_size > 1, a batch keeps gathering requests until it is full or none has arrived for this
# long: Inspect starts the next samples as earlier ones end, and their requests come tens of ms apart
GATHER_QUIET_S = 0.1


class Engine:
    def __init__(self, spec: str, dtype: str, batch_size: int | None = None, device: str | None = None,
                 decode: str | None = None, prompt_cache_mb: int | None = None):
        import torch

        from teachwhy import decode as decoding
        from teachwhy import models

        self.loaded = models.load(spec, dtype=dtype)
        self.tokenizer = self.loaded.tokenizer
        device = device or ("cuda" if torch.cuda.is_available() else None)
        if device:
            self.loaded.model.to(device)
        self.device = next(self.loaded.model.parameters()).device
        self.batch_size = batch_size or (16 if self.device.type == "cuda" else 1)
        self.decode = decode or DECODES[0]
        self.own_loop = decoding.supported(self.loaded.model)  # else transformers' generate()
        mb = PROMPT_CACHE_MB if prompt_cache_mb is None else prompt_cache_mb
        self.prompts = decoding.PromptCache(mb * 2**20)
        self._queue: queue.Queue[_Request | None] = queue.Queue()  # None: stop serving
        self._held: list[_Request] = []
        self._seen: Counter[str] = Counter()
        self._seen_lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, name=f"teachwhy-gen-{spec}", daemon=True)
        self._thread.start()

    def submit(self, prompt: str, params: GenParams) -> concurrent.futures.Future:
        seed = None
        if params.seed is not None:
            with self._seen_lock:
                n = self._seen[prompt]
                self._seen[prompt] += 1
            digest = hashlib.sha256(f"{params.seed}\0{n}\0{prompt}".encode()).digest()
            seed = int.from_bytes(digest[:4], "little")
        request = _Request(prompt, params, seed, concurrent.futures.Future())
        self._queue.put(request)
        return request.future

    def close(self) -> None:
        """Stop the worker thread once the requests already queued are served; drop the model."""
        self._queue.put(None)
        self._thread.join()
        self.prompts.clear()
        del self.loaded

    def _next_batch(self) -> list[_Request] | None:
        first = self._held.pop(0) if self._held else self._queue.get()
        if first is None:
            return None
        batch, key = [first], first.params.batch_key()
        keep: list[_Request] = []
        for r in self._held:
            (batch if len(batch) < self.batch_size and r.params.batch_key() == key else keep).append(r)
        self._held = keep
        while len(batch) < self.batch_size:  # gather until full, or quiet for GATHER_QUIET_S
            try:
                nxt = self._queue.get(timeout=GATHER_QUIET_S)
            except queue.Empty:
                break
            if nxt is None:  # asked to stop: serve this batch and what is held first
                self._queue.put(None)
                break
            (batch if nxt.params.batch_key() == key else self._held).append(nxt)
        return batch

    def _serve(self) -> None:
        while True:
            taken = self._next_batch()
            if taken is None:
                return
            # requests whose caller gave up (a cancelled sample) are dropped here
            batch = [r for r in taken if r.future.set_running_or_notify_cancel()]
            if not batch:
                continue
            try:
                results = self._generate([r.prompt for r in batch], batch[0].params, [r.seed for r in batch])
            except Exception as exc:  # hand the error to every waiting request
                for r in batch:
                    r.future.set_exception(exc)
                continue
            for r, res in zip(batch, results):
                r.future.set_result(res)

    def _generate(self, prompts: list[str], p: GenParams, seeds: list[int | None]) -> list[Completion]:
        import torch

        tok = self.tokenizer
        ids = [tok(pr, add_special_tokens=False)["input_ids"] for pr in prompts]
        if any(s is not None for s in seeds):
            mixed = hashlib.sha256(repr(seeds).encode()).digest()
            torch.manual_seed(int.from_bytes(mixed[:4], "little"))
        with torch.inference_mode():
            if self.own_loop and self.decode != "generate":
                rows = self._decode(prompts, ids, p)
            else:
                rows = self._hf_generate(ids, p)
        eos = _eos_ids(self.loaded.model, tok)
        return [_completion(tok, row, len(x), p, eos) for row, x in zip(rows, ids)]

    def _decode(self, prompts: list[str], ids: list[list[int]], p: GenParams) -> list[list[int]]:
        """teachwhy.decode: each distinct prompt prefilled once (kept for later epochs), one loop."""
        from teachwhy import decode as decoding

        model, tok = self.loaded.model, self.tokenizer
        rows: dict[str, decoding.Prefilled] = {}
        for prompt, x in zip(prompts, ids):
            if prompt not in rows:
                found = self.prompts.get(prompt)
                rows[prompt] = found or decoding.prefill(model, x, self.device)
                if found is None:
                    self.prompts.put(prompt, rows[prompt])
        choose = decoding.chooser(model, p.temperature > 0, max(len(x) for x in ids), len(ids), _pad_id(tok),
                                  **_sampling(p))
        stop = None
        if p.stop:
            def stop(new: list[int]) -> bool:
                text = tok.decode(new, skip_special_tokens=True)
                return any(s in text for s in p.stop)
        return decoding.decode(model, [rows[pr] for pr in prompts], choose, p.max_tokens,
                               _eos_ids(model, tok), _pad_id(tok), stop, pack_heads=self.decode == "fast")

    def _hf_generate(self, ids: list[list[int]], p: GenParams) -> list[list[int]]:
        """transformers' generate() over the left-padded batch: the new tokens of each row."""
        import torch

        tok, model = self.tokenizer, self.loaded.model
        pad_id = _pad_id(tok)
        width = max(len(x) for x in ids)
        input_ids = torch.tensor([[pad_id] * (width - len(x)) + x for x in ids], device=self.device)
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=self.device)
        kwargs: dict[str, Any] = dict(max_new_tokens=p.max_tokens, pad_token_id=pad_id,
                                      do_sample=p.temperature > 0, **_sampling(p))
        if p.stop:
            kwargs.update(stop_strings=list(p.stop), tokenizer=tok)
        out = model.generate(input_ids=input_ids, attention_mask=mask, **kwargs)
        return out[:, width:].tolist()


def _pad_id(tok: Any) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


def _sampling(p: GenParams) -> dict[str, Any]:
    """The sampling settings generate() is given (none when greedy)."""
    if p.temperature <= 0:
        return {}
    given = {"temperature": p.temperature, "top_p": p.top_p, "top_k": p.top_k}
    return {k: v for k, v in given.items() if v is not None}


def _completion(tok: Any, row: list[int], prompt_tokens: int, p: GenParams, eos: set[int]) -> Completion:
    """A row's new tokens as a Completion: cut at the first end-of-sequence token and at the first
    stop string (which is left out)."""
    n = next((i for i, t in enumerate(row) if t in eos), None)
    new = row if n is None else row[:n]
    text = tok.decode(new, skip_special_tokens=True)
    stop_reason: StopReason = "max_tokens" if n is None and len(row) >= p.max_tokens else "stop"
    for s in p.stop:
        if s in text:
            text, stop_reason = text[: text.index(s)], "stop"
    return Completion(text, prompt_tokens, len(new) + (n is not None), stop_reason)


def _eos_ids(model: Any, tok: Any) -> set[int]:
    ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(gen_eos, int):
        ids.add(gen_eos)
    elif isinstance(gen_eos, (list, tuple)):
        ids.update(gen_eos)
    return ids


_engines: dict[tuple[str, str], Engine] = {}
_engines_lock = threading.Lock()


def engine(spec: str, dtype: str = models.DEFAULT_DTYPE, batch_size: int | None = None,
           device: str | None = None, decode: str | None = None, prompt_cache_mb: int | None = None) -> Engine:
    """The process-wide engine for (spec, dtype), loading the model on first use (onto `device`,
    by default CUDA when available); batch_size and decode, when given, apply from now on."""
    with _engines_lock:
        key = (spec, dtype)
        if key not in _engines:
            _engines[key] = Engine(spec, dtype, batch_size, device, decode, prompt_cache_mb)
        if batch_size:
            _engines[key].batch_size = batch_size
        if decode:
            _engines[key].decode = decode
        return _engines[key]


def close_engines() -> None:
    """Stop every engine and drop its model (a long-lived process done with local generation); the
    next request loads the model again."""
    with _engines_lock:
        engines = list(_engines.values())
        _engines.clear()
    for e in engines:
        e.close()


# ---------------------------------------------------------------------------------------------
# the Inspect provider


@modelapi(name="teachwhy")
class TeachwhyAPI(ModelAPI):
    """`teachwhy/<spec>` with model_args dtype ("float32"|"bfloat16"), batch_size, device, decode
    ("exact"|"fast"|"generate") and prompt_cache_mb."""

    def __init__(
        self,
        model_name: str,
        base_url: str | None = None,
        api_key: str | None = None,
        config: GenerateConfig = GenerateConfig(),
        **model_args: Any,
    ) -> None:
        super().__init__(model_name=model_name, base_url=base_url, api_key=api_key, config=config)
        dtype = str(model_args.pop("dtype", "auto"))
        batch_size = model_args.pop("batch_size", None)
        device = model_args.pop("device", None)
        decode = model_args.pop("decode", None)
        cache_mb = model_args.pop("prompt_cache_mb", None)
        if model_args:
            raise UserError(
                f"teachwhy/{model_name}: unknown model args {', '.join(sorted(model_args))}; "
                "the local provider takes dtype, batch_size, device, decode and prompt_cache_mb"
            )
        if decode is not None and decode not in DECODES:
            raise UserError(f"teachwhy/{model_name}: unknown decode '{decode}'; use one of {', '.join(DECODES)}")
        self._engine_args = (model_name, dtype, int(batch_size) if batch_size else None, device, decode,
                             None if cache_mb is None else int(cache_mb))
        engine(*self._engine_args)  # loads the model now, so a bad spec fails before the eval starts

    @property
    def engine(self) -> Engine:
        """Looked up per call (not held), so close_engines() frees the model of a memoized API."""
        return engine(*self._engine_args)

    async def generate(
        self,
        input: list[ChatMessage],
        tools: list[ToolInfo],
        tool_choice: ToolChoice,
        config: GenerateConfig,
    ) -> ModelOutput:
        started = time.monotonic()
        prompt = render_prompt(self.engine.tokenizer, input)
        result: Completion = await asyncio.wrap_future(
            self.engine.submit(prompt, GenParams.from_config(config))
        )
        message = ChatMessageAssistant(content=result.text, model=self.model_name, source="generate")
        return ModelOutput(
            model=self.model_name,
            choices=[ChatCompletionChoice(message=message, stop_reason=result.stop_reason)],
            usage=ModelUsage(
                input_tokens=result.input_tokens,
                output_tokens=result.output_tokens,
                total_tokens=result.input_tokens + result.output_tokens,
            ),
            time=time.monotonic() - started,
        )

    def max_tokens(self) -> int | None:
        return DEFAULT_MAX_TOKENS

    def max_connections(self) -> int:
        return max(4, 2 * self.engine.batch_size)
