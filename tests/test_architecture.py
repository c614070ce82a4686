"""The architecture holds: layers import one way, no import cycles, no family branches outside models/.

The contracts live in ``pyproject.toml`` (``[tool.importlinter]``); docs/architecture.md explains
them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "fakescope"


def test_layer_and_cycle_contracts_are_kept() -> None:
    # In a process of its own: import-linter configures logging, which would silence the
    # loggers other tests capture.
    lint = Path(sys.executable).with_name("lint-imports")
    cmd = [str(lint), "--config", str(ROOT / "pyproject.toml"), "--no-cache"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("KEPT") == 3 and "BROKEN" not in proc.stdout


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


def _subparsers() -> dict:
    import argparse

    from fakescope.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def test_every_command_is_described_and_every_option_explained() -> None:
    import argparse

    missing = []
    for name, p in _subparsers().items():
        if not p.description:
            missing.append(f"{name}: no description")
        for action in p._actions:
            if action.option_strings and action.help is None:
                missing.append(f"{name} {action.option_strings[0]}: no help")
            if action.help == argparse.SUPPRESS and action.dest != "detector":
                missing.append(f"{name} {action.option_strings[0]}: hidden")
        text = p.format_help()
        assert "%%" not in text and "%(" not in text, name
    assert missing == []


def test_help_states_each_default_once_and_none_for_switches() -> None:
    """``--no-isolate-decode`` shows no "(default: True)"; "(512) (default: 512)" is not
    doubled; the description says what fakescope is for, videos included."""
    import re

    from fakescope.cli import build_parser

    assert "images and videos" in (build_parser().description or "")
    wrong = (
        r"\(default: (True|False)\)",  # a switch's stored value is no default to show
        r"\(([^()]+)\) \(default: \1\)",  # "(512) (default: 512)"
        r"default \S+\) \(default:",  # "(default 50) (default: 50)"
    )
    problems = []
    for name, p in _subparsers().items():
        text = " ".join(p.format_help().split())
        problems += [f"{name}: {m.group(0)}" for w in wrong for m in re.finditer(w, text)]
    assert problems == []


def test_detector_is_always_a_detector_reference() -> None:
    """``--detector`` names a detector in every command; training chooses ``--family``."""
    for name, p in _subparsers().items():
        for action in p._actions:
            if "--detector" in action.option_strings and action.help != "==SUPPRESS==":
                assert action.choices is None, name
                assert "builtin:" in action.help or "checkpoint" in action.help, name


def test_ctrl_c_says_what_was_kept_only_where_a_command_resumes(monkeypatch, capsys) -> None:
    """Ctrl+C in serve or info is just "interrupted"; in predict and train it says how to go on."""
    import fakescope.cli.models as models_cli
    import fakescope.cli.predict as predict_cli
    from fakescope.cli import main

    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(models_cli, "cmd_info", interrupted)
    monkeypatch.setattr(predict_cli, "cmd_predict", interrupted)
    assert main(["info", "builtin:clip-layers"]) == 130
    assert capsys.readouterr().err.strip() == "fakescope: interrupted"
    assert main(["predict", "x.jpg"]) == 130
    assert "rows already written are kept, continue with --resume" in capsys.readouterr().err


def _calls_by_function() -> dict[str, list[tuple[str, str]]]:
    """Every call in the package: called name -> [(module, enclosing function), ...]."""
    out: dict[str, list[tuple[str, str]]] = {}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)

        def visit(node: ast.AST, where: str, module: str = module) -> None:
            for child in ast.iter_child_nodes(node):
                inner = where
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    inner = f"{where}.{child.name}" if where else child.name
                if isinstance(child, ast.Call):
                    f = child.func
                    name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
                    if name:
                        out.setdefault(name, []).append((module, inner))
                if (
                    isinstance(child, ast.Subscript)
                    and getattr(child.value, "id", "") == "BUILTINS"
                ):
                    out.setdefault("BUILTINS[]", []).append((module, inner))
                visit(child, inner)

        visit(ast.parse(path.read_text()), "")
    return out


def test_a_detector_is_resolved_in_one_place_each() -> None:
    calls = _calls_by_function()
    # the header of a safetensors file is read by one function
    assert set(calls["metadata"]) == {("fakescope.models.header", "read_meta")}
    # builtin:NAME becomes a file in one function (the other BUILTINS reads are names and words)
    files = {w for w in calls["BUILTINS[]"] if w[1] != "describe"}
    assert files == {("fakescope.zoo.__init__", "detector_file")}
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name != "zoo":
            assert "len(PREFIX)" not in path.read_text(), path
    # a backbone file is looked for by one function, and a detector's backbone found by one
    assert set(calls["find_file"]) == {("fakescope.embed.fetch", "ensure_file")}
    scoring = ("fakescope.models", "fakescope.infer", "fakescope.eval", "fakescope.serve")
    finders = {w for w in calls["ensure_file"] if w[0].startswith(scoring)}
    assert finders == {("fakescope.models.probe", "backbone_file")}
    assert set(calls["backbone_file"]) == {
        ("fakescope.infer.backends", "resolve"),
        ("fakescope.models.probe", "build_probe_from_spec"),
    }
    # and a Predictor is built in one place: Predictor.open (its ``cls(...)``)
    assert "Predictor" not in calls


BENCH = ROOT / "bench"
#: What makes a file the package ships; bench/ measures and must call none of them.
SHIPPED_FILE_WRITERS = {
    "build",
    "calibrate_tower",
    "tower_reference",
    "write_reference",
    "save_ranges",
}


def _bench_imports() -> dict[str, list[ast.ImportFrom | ast.Import]]:
    return {
        p.stem: [
            n
            for n in ast.walk(ast.parse(p.read_text()))
            if isinstance(n, ast.Import | ast.ImportFrom)
        ]
        for p in sorted(BENCH.glob("*.py"))
    }


def test_bench_imports_resolve_are_acyclic_and_write_no_shipped_file() -> None:
    import importlib
    import importlib.util

    imports = _bench_imports()
    graph: dict[str, set[str]] = {name: set() for name in imports}
    for name, nodes in imports.items():
        for node in nodes:
            if isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name in imports}
                continue
            module = node.module or ""
            if module in imports:
                graph[name].add(module)
            if module.startswith("fakescope"):
                found = importlib.import_module(module)
                for alias in node.names:
                    assert hasattr(found, alias.name) or importlib.util.find_spec(
                        f"{module}.{alias.name}"
                    ), f"bench/{name}.py: {module} has no {alias.name}"
                    assert alias.name not in SHIPPED_FILE_WRITERS, (
                        f"bench/{name}.py imports {module}.{alias.name}: the package builds "
                        "what it ships (fakescope recipe)"
                    )
    seen: dict[str, int] = {}

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, f"bench/ import cycle: {' -> '.join((*path, node))}"
        if seen.get(node):
            return
        for nxt in graph[node]:
            visit(nxt, (*path, node))
        seen[node] = 1

    for node in graph:
        visit(node, ())
