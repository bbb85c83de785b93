"""No function under src/teachwhy (methods and nested functions included) is longer than 80 lines,
counted from its `def` line to its last line: a longer one is split into named helpers."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "teachwhy"
LIMIT = 80


def long_functions(root: Path, limit: int = LIMIT) -> list[str]:
    """'name (file:line): N lines' for every function under root longer than `limit` lines."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > limit:
                    found.append(f"{node.name} ({path.relative_to(root.parent)}:{node.lineno}): {length} lines")
    return found


def test_no_function_longer_than_80_lines():
    found = long_functions(SRC)
    assert not found, (f"{len(found)} function(s) over {LIMIT} lines; split each into named helpers:\n"
                       + "\n".join(found))


def test_the_check_finds_long_methods_and_nested_functions(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    body = "".join(f"        x{i} = {i}\n" for i in range(80))  # 80 lines, at the depth of a method
    (pkg / "m.py").write_text("class C:\n    def method(self):\n" + body + "\n\n"
                              "def outer():\n    async def inner():\n" + body + "    return inner\n\n\n"
                              "def short():\n    return 1\n")
    assert sorted(long_functions(pkg)) == ["inner (pkg/m.py:86): 81 lines", "method (pkg/m.py:2): 81 lines",
                                           "outer (pkg/m.py:85): 83 lines"]
    assert long_functions(pkg, limit=83) == []
