import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest


@pytest.fixture(scope="session")
def embedded():
    """The real embedded model (SmolLM2-135M-Instruct), loaded once per test session."""
    from teachwhy import models

    return models.load("smollm2-135m", dtype="float32")


FAST_TIER = os.environ.get("TEACHWHY_TEST_TIER") == "fast"


def pytest_collection_modifyitems(config, items):
    """A test that asks for the `embedded` fixture loads the model: it belongs to the slow tier."""
    for item in items:
        if "embedded" in getattr(item, "fixturenames", ()):
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
