"""The benchmarks' anchors are what they say: a script that stands for "bare python-tuf"
imports nothing of Greenlight, or the ratio printed against it measures Greenlight against
itself."""

import ast
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _script_texts() -> list[tuple[str, str, str]]:
    """(file, name, text) of every module-level string constant that is Python source run as
    a script of its own (it imports something)."""
    found = []
    for path in sorted(BENCH.glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                    and isinstance(node.value.value, str)):
                continue
            text = node.value.value
            try:
                tree = ast.parse(text)
            except SyntaxError:
                continue
            if any(isinstance(n, ast.Import | ast.ImportFrom) for n in ast.walk(tree)):
                for target in node.targets:
                    found.append((path.name, ast.unparse(target), text))
    return found


def _imported(text: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_startup_anchor_is_found() -> None:
    assert ("startup.py", "BARE") in {(f, n) for f, n, _ in _script_texts()}


def test_no_anchor_script_imports_greenlight() -> None:
    for file, name, text in _script_texts():
        greenlight = sorted(m for m in _imported(text) if m.split(".")[0] == "greenlight")
        assert not greenlight, f"bench/{file}: {name} imports {greenlight}"
