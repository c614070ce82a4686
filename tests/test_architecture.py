"""The architecture holds: layers import one way, no import cycles, no family branches outside models/.

The contracts live in ``pyproject.toml`` (``[tool.importlinter]``); docs/architecture.md explains
them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "fakescope"


def test_layer_and_cycle_contracts_are_kept(capsys: pytest.CaptureFixture[str]) -> None:
    from importlinter.cli import lint_imports

    code = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True)
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.count("KEPT") == 3 and "BROKEN" not in out


def _is_spec(node: ast.expr) -> bool:
    return (isinstance(node, ast.Name) and node.id == "spec") or (
        isinstance(node, ast.Attribute) and node.attr == "spec"
    )


def _kind_reads(path: Path) -> list[int]:
    """Lines where ``<something>.spec.kind`` is compared or tested (a family branch)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                if isinstance(side, ast.Attribute) and side.attr == "kind" and _is_spec(side.value):
                    lines.append(node.lineno)
    return lines


def test_no_detector_family_branches_outside_models() -> None:
    found = {
        str(p.relative_to(PACKAGE)): lines
        for p in PACKAGE.rglob("*.py")
        if PACKAGE / "models" not in p.parents and (lines := _kind_reads(p))
    }
    assert found == {}, f"branch on Detector properties, not spec.kind: {found}"
    # the check itself sees branches (the registry has them)
    assert _kind_reads(PACKAGE / "models" / "registry.py")
