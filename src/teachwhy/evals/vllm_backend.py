"""Choice-mode scoring with vLLM's prompt log-probs (GPU machines).

`VLLMChoiceBackend` gives what `choice.HFChoiceBackend` gives, from the same token ids:
- `score(messages, candidates)`: each candidate's per-token log-probs after the chat prompt and after
  `choice.NEUTRAL_MESSAGES` (CandidateScore: n_tokens, sum_logprob, neutral_sum_logprob, token_ids,
  token_logprobs);
- `letter_logprobs(prompts, letters)`: the log-prob of each one-token letter as the reply's first token.

How: every sequence (prompt + candidate, neutral context + candidate, prompt + letter) is tokenized
here exactly as HFChoiceBackend.prompt_ids does (the tokenizer's chat template rendered to text, then
encoded without special tokens), sent to vLLM as token ids, and scored from vLLM's prompt log-probs:
`SamplingParams(max_tokens=1, prompt_logprobs=1)` returns, per prompt position, a dict of token id ->
Logprob whose entry for the prompt's own token is that token's log-prob given everything before it
(the first position has none). One generated token per request is the price of the API.

vLLM's prompt log-probs are computed from raw logits (its default `logprobs_mode`), so sampling
settings do not change them. Requests that ask for prompt log-probs skip vLLM V1's prefix cache
(every prompt is computed in full), so the engine is built with prefix caching off.

A PEFT adapter is served as a LoRA on its base model (`enable_lora`, `LoRARequest`), never merged.

vllm is imported only inside `import_vllm` (called by `VLLMChoiceBackend.open`): importing this module,
or teachwhy, never imports it. The conversion from vLLM's output structure to floats is in small pure
functions (`token_logprobs`, `output_logprobs`, `split_rows`) tested on CPU with data of vLLM's shape.

Status: written against vLLM's documented API; not yet run on a GPU (see docs/performance.md, "GPU
path (vLLM)", and bench/gpu_check_vllm.py, which compares it with the HF backend).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from teachwhy import models
from teachwhy.errors import UserError
from teachwhy.evals.choice import NEUTRAL_MESSAGES, CandidateScore, letter_token_ids

VLLM_MISSING = ("the vllm backend needs the vllm package, which is not installed here: on a machine with a "
                "CUDA GPU run `pip install 'teachwhy[vllm]'`, or use --backend hf")

# vLLM accepts only these values for max_lora_rank (vllm.config.lora.MaxLoRARanks)
LORA_RANK_SLOTS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


# -- pure conversions (vLLM's output shape -> floats) -------------------------------------------------
def token_logprobs(prompt_logprobs: Sequence[Any] | None, token_ids: Sequence[int], start: int) -> list[float]:
    """The log-probs of `token_ids[start:]`, each given the tokens before it, from vLLM's
    `RequestOutput.prompt_logprobs` for the sequence `token_ids`.

    That structure has one entry per prompt position: None (or an empty dict, in vLLM's FlatLogprobs)
    at position 0, then a dict of token id -> object with `.logprob` (vllm.logprobs.Logprob) that
    always holds the prompt's own token at that position, plus the top-k others."""
    if prompt_logprobs is None:
        raise ValueError("vLLM returned no prompt log-probs: the request must set SamplingParams(prompt_logprobs=...)")
    if len(prompt_logprobs) != len(token_ids):
        raise ValueError(f"vLLM returned prompt log-probs for {len(prompt_logprobs)} positions of a "
                         f"{len(token_ids)}-token sequence")
    if not 1 <= start <= len(token_ids):
        raise ValueError(f"cannot score from position {start} of a {len(token_ids)}-token sequence "
                         "(the first token has no log-prob)")
    out = []
    for i in range(start, len(token_ids)):
        entry, tid = prompt_logprobs[i], token_ids[i]
        if not entry or tid not in entry:
            raise ValueError(f"vLLM's prompt log-probs at position {i} do not hold the prompt's token {tid}")
        out.append(float(entry[tid].logprob))
    return out


def output_logprobs(output: Any, token_ids: Sequence[int], start: int) -> list[float]:
    """`token_logprobs` of one vLLM RequestOutput, after checking it is the sequence that was sent."""
    got = list(output.prompt_token_ids or [])
    if got != list(token_ids):
        raise ValueError(f"vLLM returned a request for another sequence ({len(got)} tokens, "
                         f"expected {len(token_ids)}): outputs out of order?")
    return token_logprobs(output.prompt_logprobs, token_ids, start)


def split_rows(flat: Sequence[float], width: int) -> list[list[float]]:
    """[a1, a2, b1, b2] with width 2 -> [[a1, a2], [b1, b2]]."""
    if width < 1 or len(flat) % width:
        raise ValueError(f"{len(flat)} values do not split into rows of {width}")
    return [list(flat[i : i + width]) for i in range(0, len(flat), width)]


def lora_rank_slot(rank: int) -> int:
    """The smallest max_lora_rank vLLM accepts that holds an adapter of rank `rank`."""
    for slot in LORA_RANK_SLOTS:
        if rank <= slot:
            return slot
    raise UserError(f"LoRA rank {rank} is above the largest vLLM serves ({LORA_RANK_SLOTS[-1]}): merge the "
                    "adapter (training option merge: true) and evaluate merged/, or use --backend hf")


def adapter_rank(adapter_dir: Path) -> int:
    """The rank `r` of a PEFT LoRA adapter, from its adapter_config.json."""
    path = Path(adapter_dir) / "adapter_config.json"
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        raise UserError(f"{path}: not readable JSON; retrain or re-save the adapter") from None
    kind = cfg.get("peft_type", "LORA") if isinstance(cfg, dict) else None
    rank = cfg.get("r") if isinstance(cfg, dict) else None
    if kind != "LORA" or not isinstance(rank, int) or rank < 1:
        raise UserError(f"{path}: vLLM serves LoRA adapters (peft_type LORA with a rank r); this one is "
                        f"{kind or 'unknown'}: use --backend hf")
    return rank


# -- vllm, imported on demand ---------------------------------------------------------------------------
def require_vllm() -> None:
    """Fail in one line where vllm is not installed (it is looked for, not imported)."""
    if importlib.util.find_spec("vllm") is None:
        raise UserError(VLLM_MISSING)


def import_vllm() -> Any:
    """The vllm module, or a one-line UserError saying how to get it."""
    require_vllm()
    try:
        return importlib.import_module("vllm")
    except ImportError as e:  # installed, but built for another CUDA or torch
        why = " ".join(str(e).split())[:160]
        raise UserError(f"vllm is installed but does not import ({type(e).__name__}: {why}): reinstall it for "
                        "this machine's CUDA and torch (`pip install 'teachwhy[vllm]'`), or use --backend hf") from None


def _engine_max_len(llm: Any) -> int | None:
    """The engine's max_model_len (vLLM keeps its ModelConfig on the LLM, or on its engine in older releases)."""
    for owner in (llm, getattr(llm, "llm_engine", None)):
        cfg = getattr(owner, "model_config", None)
        n = getattr(cfg, "max_model_len", None)
        if isinstance(n, int):
            return n
    return None


def _config_max_len(model_dir: Path) -> int | None:
    try:
        n = json.loads((Path(model_dir) / "config.json").read_text()).get("max_position_embeddings")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return n if isinstance(n, int) else None


class VLLMChoiceBackend:
    """Scores candidates with vLLM's prompt log-probs; same methods and fields as HFChoiceBackend."""

    def __init__(self, llm: Any, tokenizer: Any, *, sampling_params: Any, name: str = "vllm",
                 lora_request: Any = None, context_limit: int | None = None):
        self.llm = llm  # a vllm.LLM (or anything with its generate(prompts, params, use_tqdm=, lora_request=))
        self.tok = tokenizer
        self.sampling_params = sampling_params
        self.name = name
        self.lora_request = lora_request
        self.context_limit = context_limit
        self.longest = 0  # the longest sequence scored in the last call (prompt plus reply or letter)
        self._neutral: list[int] | None = None

    @classmethod
    def open(cls, spec: str, dtype: str = models.DEFAULT_DTYPE, **engine_args: Any) -> VLLMChoiceBackend:
        """A vLLM engine on a local model: an embedded name, a HF directory, or a PEFT adapter (served as
        a LoRA on its base). `engine_args` go to vllm.LLM (e.g. gpu_memory_utilization, max_model_len)."""
        vllm = import_vllm()
        ref = models.resolve(spec)
        if not ref.is_local:
            raise UserError(f"the vllm backend scores local models; '{spec}' is an Inspect model id")
        lora_request = None
        if ref.kind == "peft":
            assert ref.path is not None and ref.base is not None  # resolve() sets both for an adapter
            base_dir = models.model_dir(ref.base)
            models.check_adapter_base(ref.path, ref.base)
            rank = adapter_rank(ref.path)
            engine_args.setdefault("enable_lora", True)
            engine_args.setdefault("max_lora_rank", lora_rank_slot(rank))
            engine_args.setdefault("max_loras", 1)
            lora_cls = importlib.import_module("vllm.lora.request").LoRARequest
            lora_request = lora_cls(lora_name=f"teachwhy-{ref.path.name}", lora_int_id=1,
                                    lora_path=str(ref.path))
        else:
            base_dir = models.model_dir(ref)
        # prompt log-prob requests never read vLLM's prefix cache; keeping it off saves its bookkeeping
        engine_args.setdefault("enable_prefix_caching", False)
        engine_args.setdefault("seed", 0)
        llm = vllm.LLM(model=str(base_dir), tokenizer=str(base_dir), dtype=models.resolve_dtype(dtype),
                       **engine_args)
        # prompt_logprobs=1 (not 0: some V1 releases treat 0 as "off"); greedy, since the one generated
        # token is discarded
        params = vllm.SamplingParams(max_tokens=1, prompt_logprobs=1, temperature=0.0)
        limit = _engine_max_len(llm) or _config_max_len(base_dir)
        return cls(llm, models.load_tokenizer(spec), sampling_params=params, name=spec,
                   lora_request=lora_request, context_limit=limit)

    def close(self) -> None:
        """Stop the engine and free its GPU memory now (otherwise when the backend is collected)."""
        engine = getattr(self.llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        self.llm = None

    # -- encoding: exactly HFChoiceBackend's ----------------------------------------------------------
    def prompt_ids(self, messages: list[dict]) -> list[int]:
        text = self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def candidate_ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    # -- scoring ----------------------------------------------------------------------------------------
    def _logprobs(self, seqs: list[list[int]], starts: list[int]) -> list[list[float]]:
        """One vLLM batch: for each sequence, the log-probs of its tokens from `start` on."""
        if self.llm is None:
            raise RuntimeError("this vLLM backend was closed")
        if self.context_limit:
            n = max(len(s) for s in seqs)
            if n >= self.context_limit:  # vLLM refuses a prompt that leaves no room for the one new token
                raise UserError(f"a scored sequence is {n} tokens, beyond what vLLM serves for this model "
                                f"({self.context_limit} with the generated token): use --backend hf, which "
                                "scores it and records it as over_context")
        # a vllm.inputs.TokensPrompt is this dict (a TypedDict)
        outs = self.llm.generate([{"prompt_token_ids": s} for s in seqs], self.sampling_params,
                                 use_tqdm=False, lora_request=self.lora_request)
        if len(outs) != len(seqs):
            raise ValueError(f"vLLM returned {len(outs)} outputs for {len(seqs)} requests")
        return [output_logprobs(o, s, st) for o, s, st in zip(outs, seqs, starts)]

    def score(self, messages: list[dict], candidates: Sequence[str]) -> list[CandidateScore]:
        cands = [self.candidate_ids(c) for c in candidates]
        if any(len(c) == 0 for c in cands):
            raise ValueError("a candidate encodes to zero tokens")
        if self._neutral is None:
            self._neutral = self.prompt_ids(NEUTRAL_MESSAGES)
        prompt, neutral = self.prompt_ids(messages), self._neutral
        self.longest = len(prompt) + max(len(c) for c in cands)
        n = len(cands)
        lps = self._logprobs([prompt + c for c in cands] + [neutral + c for c in cands],
                             [len(prompt)] * n + [len(neutral)] * n)
        ctx, neu = lps[:n], lps[n:]
        return [CandidateScore(len(c), sum(s), sum(u), tuple(c), tuple(s)) for c, s, u in zip(cands, ctx, neu)]

    def letter_logprobs(self, prompts: Sequence[list[dict]], letters: Sequence[str]) -> list[list[float]]:
        """For each prompt (a chat ending before the assistant's reply), the log-prob of each letter as
        the reply's first token: one request per (prompt, letter), the letter appended to the prompt."""
        letter_ids = letter_token_ids(self.candidate_ids, letters)
        rows = [self.prompt_ids(m) for m in prompts]
        self.longest = max(len(r) for r in rows) + 1
        seqs = [[*r, lid] for r in rows for lid in letter_ids]
        flat = [lp[0] for lp in self._logprobs(seqs, [len(s) - 1 for s in seqs])]
        return split_rows(flat, len(letter_ids))
