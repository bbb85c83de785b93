"""The candidate token tree (evals/choice.py): candidates' shared beginnings computed once, every node
attending to the prompt and its own ancestors. Against the path before it (`_score_batched`: one
padded row per candidate) in float32: per-token log-probs within 1e-3 and the same decision on every
scenario, format scoring and suite item; on the tiny model and, for four eval scenarios, the embedded
model."""

from __future__ import annotations

import pytest

from teachwhy.evals.choice import HFChoiceBackend, candidate_tree, score_scenario


def test_tree_shares_beginnings_and_masks_to_ancestors():
    tree = candidate_tree([[1, 2, 3], [1, 2, 4], [1, 5], [6]])
    assert tree.tokens == [1, 2, 3, 4, 5, 6]  # 1 and 2 once for the first three candidates
    assert tree.parent == [-1, 0, 1, 1, 0, -1] and tree.depth == [0, 1, 2, 2, 1, 0]
    assert tree.nodes == [[0, 1, 2], [0, 1, 3], [0, 4], [5]]
    assert tree.parents_needed() == [0, 1]  # the last token's logits are never needed
    m = tree.mask(2).tolist()
    assert m[3] == [True, True, True, True, False, True, False, False]  # node 3 (token 4): prefix, 0, 1, itself
    assert m[5] == [True, True, False, False, False, False, False, True]  # a candidate of its own


def _both(backend: HFChoiceBackend, scenario, fmt: str = "continuation"):
    tree = score_scenario(backend, scenario, fmt)
    batched = HFChoiceBackend(backend.model, backend.tok)
    batched._score_from_prefix = batched._score_batched  # type: ignore[method-assign]
    return tree, score_scenario(batched, scenario, fmt)


def _same(tree: dict, ref: dict, tol: float) -> None:
    for a, b in zip(tree["candidates"], ref["candidates"]):
        assert a["id"] == b["id"]
        for key in ("sum_logprob", "neutral_sum_logprob"):
            assert abs(a[key] - b[key]) < tol, (a["id"], key, a[key], b[key])
    for scoring in ("mean", "sum", "calibrated", "pair"):
        if scoring in ref:
            assert tree[scoring]["top"] == ref[scoring]["top"]
            assert tree[scoring]["harmful_choice"] == ref[scoring]["harmful_choice"]
            assert abs(tree[scoring]["p_harmful"] - ref[scoring]["p_harmful"]) < tol


@pytest.mark.slow
def test_tree_equals_batched_on_the_tiny_model(tiny):
    from teachwhy import models
    from teachwhy.constitution.loader import load_constitution
    from teachwhy.evals.suites.adherence.items import build_items
    from teachwhy.scenarios import builtin_scenarios, select

    loaded = models.load(tiny, dtype="float32")
    b = HFChoiceBackend(loaded.model, loaded.tokenizer)
    items = [*select(builtin_scenarios(), split="eval", limit=8),
             *build_items(load_constitution(None), "eval", None, 4)]
    for it in items:
        _same(*_both(b, it), tol=1e-4)


@pytest.mark.slow
def test_tree_equals_batched_on_the_embedded_model(embedded):
    from teachwhy.scenarios import builtin_scenarios, select

    b = HFChoiceBackend(embedded.model, embedded.tokenizer)  # float32
    for s in select(builtin_scenarios(), split="eval", limit=4):
        _same(*_both(b, s), tol=1e-3)


def test_single_token_candidates_need_no_tree_forward(tiny):
    """When every candidate is one token, the prefix's last logits score them all (no empty
    `logits_to_keep`), the same as the batched path; a mix of lengths still goes through the tree."""
    from teachwhy import models

    loaded = models.load(tiny, dtype="float32")
    b = HFChoiceBackend(loaded.model, loaded.tokenizer)
    prefix = b._encode_prefix(loaded.tokenizer("Pick one:", add_special_tokens=False)["input_ids"])
    for cands in ([[5], [7], [9]], [[5], [7, 8], [9]]):
        tree, ref = b._score_from_prefix(prefix, cands), b._score_batched(prefix, cands)
        assert [len(t) for t in tree] == [len(c) for c in cands]
        for a, r in zip(tree, ref):
            assert a == pytest.approx(r, abs=1e-4)
