"""The scenario file that docs/formats.md calls "a complete example" passes `teachwhy scenarios validate`
as it is written there, so the documentation cannot drift from what teachwhy accepts."""

import re
from pathlib import Path

import pytest

from cliutil import run_cli

DOCS = Path(__file__).resolve().parents[1] / "docs" / "formats.md"

pytestmark = pytest.mark.slow  # validate loads the embedded tokenizer


def complete_example() -> str:
    """The first ```yaml block under the heading "### A complete example" of docs/formats.md."""
    text = DOCS.read_text(encoding="utf-8")
    m = re.search(r"^### A complete example\n(.*?)^```yaml\n(.*?)^```", text, re.S | re.M)
    assert m, "docs/formats.md has no yaml block under '### A complete example'"
    return m.group(2)


def test_the_complete_example_in_formats_md_validates(tmp_path):
    f = tmp_path / "example.yaml"
    f.write_text(complete_example(), encoding="utf-8")
    p = run_cli("scenarios", "validate", str(f))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "1 scenarios (1 eval, 0 train) checked" in p.stdout
    assert "ok: schema, candidate length matching, grader agrees with every label" in p.stdout
    assert "problem" not in p.stderr, p.stderr
