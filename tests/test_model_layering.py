"""Layers depend downward: the model code imports nothing above it, and the recognizer
imports the family loaders as code, not by name from strings."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[1] / "engine"
ABOVE_MODELS = (
    "engine.streaming",
    "engine.serving",
    "engine.recognizer",
    "engine.session",
    "engine.worker",
    "engine.remote",
    "engine.cli",
)


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_model_code_imports_nothing_above_it() -> None:
    files = sorted((ENGINE / "models").rglob("*.py"))
    assert len(files) > 10
    upward = {
        f"{path.relative_to(ENGINE)}: {name}"
        for path in files
        for name in _imports(path)
        if name.startswith(ABOVE_MODELS) or name.startswith("transformers")
    }
    assert not upward


def test_the_recognizer_names_no_module_in_a_string() -> None:
    tree = ast.parse((ENGINE / "recognizer.py").read_text(encoding="utf-8"))
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)]
    assert not [s for s in strings if isinstance(s, str) and s.startswith("engine.")]
    assert "importlib" not in _imports(ENGINE / "recognizer.py")
