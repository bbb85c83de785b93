import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # parallel workers (pytest -n N) share the cores: one torch thread each, in this process and in the
    # CLI subprocesses it starts, instead of N processes each using every core
    os.environ.setdefault("TEACHWHY_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

pytest_plugins = ["ci_skips"]  # under CI=true a skipped test fails, naming what is missing


@pytest.fixture(scope="session")
def embedded():
    """The real embedded model (SmolLM2-135M-Instruct), loaded once per test session."""
    from teachwhy import models

    return models.load("smollm2-135m", dtype="float32")


FAST_TIER = os.environ.get("TEACHWHY_TEST_TIER") == "fast"


def pytest_collection_modifyitems(config, items):
    """A test that asks for the `embedded` or a `tiny` fixture loads a model: it belongs to the slow tier."""
    for item in items:
        if {"embedded", "tiny", "tiny_loaded"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _fast_tier_loads_no_model(request, monkeypatch):
    """`make test-fast` (TEACHWHY_TEST_TIER=fast) promises no model loading: a test that loads the
    model's weights there fails, naming the fix, instead of silently making the tier slow. (Token
    counting needs the tokenizer, which lives in the prepared model directory: the first run on a
    fresh machine prepares it once.)"""
    if not FAST_TIER:
        return
    from teachwhy import models

    def refuse(*args, **kwargs):
        raise AssertionError(f"{request.node.nodeid} loads the embedded model: mark it @pytest.mark.slow")

    monkeypatch.setattr(models, "load", refuse)


@pytest.fixture(scope="session")
def tiny() -> str:
    """A tiny randomly initialised model of SmolLM2-135M's architecture (2 layers, hidden 64; the same
    tokenizer and chat template), built once into the model cache (teachwhy.tiny): for tests of
    mechanics, whose assertions do not depend on real weights. Pass it wherever a model spec goes."""
    from teachwhy.tiny import build_tiny

    return str(build_tiny())


@pytest.fixture(scope="session")
def tiny_loaded(tiny):
    """The tiny model loaded once per test session (float32), like `embedded` for the real one."""
    from teachwhy import models

    return models.load(tiny, dtype="float32")
