"""The package's layers (pyproject.toml, [tool.importlinter]; docs/architecture.md, "Layers"): the
package keeps them, and an import from a lower layer back up to a higher one breaks them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(src: Path, config: Path, cwd: Path) -> subprocess.CompletedProcess:
    """lint-imports on the teachwhy package found under `src`, with the contracts in `config`."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([str(LINT_IMPORTS), "--config", str(config), "--no-cache"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_package_keeps_its_layers():
    p = lint_imports(ROOT / "src", ROOT / "pyproject.toml", ROOT)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "teachwhy layers KEPT" in p.stdout and "evals layers KEPT" in p.stdout


def _add_import(module_file: Path, line: str) -> None:
    """Add `line` at the top of a module, after its `from __future__` import."""
    text = module_file.read_text()
    future = "from __future__ import annotations\n"
    assert future in text, module_file
    module_file.write_text(text.replace(future, future + line + "\n", 1))


@pytest.mark.parametrize("module, back_import, contract, message", [
    ("evals/stats.py", "import teachwhy.train.sft", "teachwhy layers",
     "teachwhy.evals is not allowed to import teachwhy.train"),
    ("cli_experiment.py", "import teachwhy.cli", "teachwhy layers",
     "teachwhy.cli_experiment is not allowed to import teachwhy.cli"),
    ("evals/vllm_backend.py", "import teachwhy.evals.backends", "evals layers",
     "teachwhy.evals.vllm_backend is not allowed to import teachwhy.evals.backends"),
], ids=["evals-imports-train", "cli_experiment-imports-cli", "vllm_backend-imports-backends"])
def test_a_back_import_breaks_the_layers(tmp_path, module, back_import, contract, message):
    pkg = tmp_path / "src" / "teachwhy"
    shutil.copytree(ROOT / "src" / "teachwhy", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    _add_import(pkg / module, back_import)
    p = lint_imports(tmp_path / "src", tmp_path / "pyproject.toml", tmp_path)
    assert p.returncode != 0, p.stdout
    assert f"{contract} BROKEN" in p.stdout and message in p.stdout, p.stdout
