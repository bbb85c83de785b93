"""Where a choice-mode scenario's time goes, and the eval split's physical floor.

On N eval scenarios (continuation format, neutral sums computed, bf16), one process, medians per
scenario of:
- tokenising (the chat template, the candidates) and the Python around the forwards;
- the prompt forward (LM head on the last position only);
- the candidates on the prompt's KV cache, as one token tree (the LM head on the needed nodes), and
  the same forward with the LM head on one position, so the LM head's share is their difference;
- the same candidates after the neutral context (the `calibrated` scoring's sums);
- the path before the tree (each candidate a padded row on a copy of the prompt's KV), for the ratio.

Then the floor for the whole split: its model FLOPs (2 x non-embedding parameters per token for every
prompt token and every tree node, both contexts; causal attention; the LM head on the rows computed)
over the bf16 `torch.mm` peak measured in this run (median of samples), against the measured time.

    HF_HUB_OFFLINE=1 python bench/bench_eval_profile.py [--limit 12]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _guard
from bench_sft import matmul_peak


def split_flops(backend, scenarios, params: int, layers: int, hidden: int, vocab: int) -> dict[str, float]:
    """Model FLOPs of scoring `scenarios` (prompt forward, candidate trees in both contexts, LM head)."""
    from teachwhy.evals.choice import NEUTRAL_MESSAGES, candidate_tree

    neutral = len(backend.prompt_ids(NEUTRAL_MESSAGES))
    out = {"prompt": 0.0, "trees": 0.0, "attention": 0.0, "lm_head": 0.0, "prompt_tokens": 0, "tree_nodes": 0}
    for s in scenarios:
        p = len(backend.prompt_ids(s.prompt_messages()))
        tree = candidate_tree([backend.candidate_ids(c.text) for c in s.candidates])
        nodes, need = len(tree.tokens), len(tree.parents_needed())
        out["prompt_tokens"] += p
        out["tree_nodes"] += 2 * nodes
        out["prompt"] += 2 * params * p
        out["trees"] += 2 * params * 2 * nodes
        # causal attention (QK^T and AV, 2 FLOPs a multiply-add): prompt p^2/2, each tree node over its context
        out["attention"] += layers * 4 * hidden * (p * p / 2 + nodes * (p + nodes / 2) + nodes * (neutral + nodes / 2))
        out["lm_head"] += 2 * hidden * vocab * (1 + 2 * need)
    out["total"] = out["prompt"] + out["trees"] + out["attention"] + out["lm_head"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=12, help="scenarios profiled (spread over the families)")
    ap.add_argument("--model", default="smollm2-135m")
    _guard.add_flag(ap)
    args = ap.parse_args()

    import torch

    from teachwhy import models
    from teachwhy.evals.choice import NEUTRAL_MESSAGES, HFChoiceBackend
    from teachwhy.scenarios import builtin_scenarios, select

    models.set_torch_threads()
    loaded = models.load(args.model, dtype="bfloat16")
    b = HFChoiceBackend(loaded.model, loaded.tokenizer)
    split = select(builtin_scenarios(), split="eval")
    picked = select(builtin_scenarios(), split="eval", limit=args.limit)
    neutral = b._encode_prefix(b.prompt_ids(NEUTRAL_MESSAGES))
    parts: dict[str, list[float]] = {k: [] for k in ("python", "prompt", "tree", "tree_no_head", "neutral",
                                                     "batched", "scenario")}
    for s in picked:
        t0 = time.perf_counter()
        cands = [b.candidate_ids(c.text) for c in s.candidates]
        prompt = b.prompt_ids(s.prompt_messages())
        t1 = time.perf_counter()
        pre = b._encode_prefix(prompt)
        t2 = time.perf_counter()
        b._score_from_prefix(pre, cands)
        t3 = time.perf_counter()
        b._score_from_prefix(neutral, cands)
        t4 = time.perf_counter()
        parts["python"].append(t1 - t0)
        parts["prompt"].append(t2 - t1)
        parts["tree"].append(t3 - t2)
        parts["neutral"].append(t4 - t3)
        parts["scenario"].append(t4 - t0)
        t = time.perf_counter()
        b._score_batched(pre, cands)
        parts["batched"].append(time.perf_counter() - t)
        t = time.perf_counter()
        _tree_without_head(b, pre, cands)
        parts["tree_no_head"].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in parts.items()}
    cfg = loaded.model.config
    emb = cfg.vocab_size * cfg.hidden_size
    params = sum(p.numel() for p in loaded.model.parameters()) - emb  # tied embeddings: the head is the embedding
    flops = split_flops(b, split, params, cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size)
    peaks = [matmul_peak("bfloat16", 2048, 10)["median_gflops"] for _ in range(3)]
    peak = statistics.median(peaks)

    print(f"{len(picked)} scenarios profiled, {torch.get_num_threads()} threads, torch {torch.__version__}, bf16")
    print(f"{'part (median per scenario)':<52}{'s':>8}{'share':>8}")
    rows = [("tokenising and Python around the forwards", med["python"]),
            ("prompt forward (LM head on the last position)", med["prompt"]),
            ("candidate tree on the prompt, layers", med["tree_no_head"]),
            ("candidate tree on the prompt, LM head (difference)", max(0.0, med["tree"] - med["tree_no_head"])),
            ("candidate tree after the neutral context", med["neutral"])]
    for label, v in rows:
        print(f"{label:<52}{v:>8.3f}{v / med['scenario']:>8.0%}")
    print(f"{'whole scenario':<52}{med['scenario']:>8.3f}")
    print(f"candidates on the prompt: tree {med['tree']:.3f} s against the batched rows {med['batched']:.3f} s "
          f"({med['batched'] / med['tree']:.2f}x)")
    floor = flops["total"] / (peak * 1e9)
    print(f"whole split ({len(split)} scenarios): {flops['prompt_tokens']:,} prompt tokens, {flops['tree_nodes']:,} "
          f"tree nodes (both contexts); {flops['total'] / 1e12:.1f} TFLOP (prompt {flops['prompt'] / 1e12:.1f}, trees "
          f"{flops['trees'] / 1e12:.1f}, attention {flops['attention'] / 1e12:.1f}, LM head "
          f"{flops['lm_head'] / 1e12:.1f})")
    print(f"bf16 torch.mm peak this run: {peak:.0f} GFLOP/s (samples {', '.join(f'{p:.0f}' for p in peaks)}); "
          f"floor at that peak: {floor:.1f} s; this profile's rate extrapolates to "
          f"{med['scenario'] * len(split):.1f} s ({floor / (med['scenario'] * len(split)):.0%} of the peak)")
    return 0


def _tree_without_head(b, prefix, cands) -> None:
    """The tree's forward with the LM head on one node only (its layers' cost)."""
    import torch
    from transformers import DynamicCache

    from teachwhy.evals.choice import candidate_tree

    kv, _, plen = prefix
    tree = candidate_tree(cands)
    cache = DynamicCache()
    for li, (k, v) in enumerate(kv):
        cache.update(k, v, li)
    with torch.inference_mode():
        b.model(input_ids=torch.tensor([tree.tokens]), cache=cache,
                position_ids=(plen + torch.tensor(tree.depth)).unsqueeze(0),
                attention_mask=tree.mask(plen)[None, None], use_cache=True, logits_to_keep=1)


if __name__ == "__main__":
    sys.exit(_guard.run(main))
