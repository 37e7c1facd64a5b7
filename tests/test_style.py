"""The code reads as the README's Development section says: short lines, models free of I/O layers, inference
free of training, no library module reaching up into the commands."""

from __future__ import annotations

import ast

import pytest

from tests.conftest import REPO

SOURCES = sorted(p for folder in ("mscg", "tests", "benchmarks") for p in (REPO / folder).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_line_is_longer_than_120_characters(path):
    long = [n for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if len(line) > 120]
    assert not long, f"{path.relative_to(REPO)}: lines {long} are longer than 120 characters"


def imported_modules(path) -> set[str]:
    """Every module named by an import in the file (`from a.b import c` names a.b and a.b.c)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("path", sorted((REPO / "mscg" / "models").glob("*.py")), ids=lambda p: p.name)
def test_models_do_not_import_artifacts_training_or_commands(path):
    layers = ("mscg.artifacts", "mscg.training", "mscg.commands", "mscg.console", "mscg.quantizers")
    bad = sorted(m for m in imported_modules(path) if m.startswith(layers))
    assert not bad, f"mscg/models/{path.name} imports {bad}: models are pure modules"


INFERENCE = sorted([*(REPO / "mscg" / "recommenders").glob("*.py"),
                    *(REPO / "mscg" / name for name in ("api.py", "serve.py", "evaluation.py"))])
# (the top package's lazy mscg.train / collab / quantize hand over to the commands' plain functions)
LIBRARY = sorted(p for p in (REPO / "mscg").rglob("*.py")
                 if "commands" not in p.relative_to(REPO).parts and p.name not in ("cli.py", "__main__.py")
                 and p != REPO / "mscg" / "__init__.py")


@pytest.mark.parametrize("path", INFERENCE, ids=lambda p: str(p.relative_to(REPO)))
def test_inference_does_not_import_training_or_commands(path):
    bad = sorted(m for m in imported_modules(path) if m.startswith(("mscg.training", "mscg.commands", "mscg.cli")))
    assert not bad, f"{path.relative_to(REPO)} imports {bad}: inference stands below training and the commands"


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(REPO)))
def test_library_modules_do_not_import_commands(path):
    bad = sorted(m for m in imported_modules(path) if m.startswith(("mscg.commands", "mscg.cli")))
    assert not bad, f"{path.relative_to(REPO)} imports {bad}: the commands use the library, never the reverse"


def test_no_import_cycles_between_mscg_modules():
    modules = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
               for p in (REPO / "mscg").rglob("*.py")}
    # the top package (lazy re-exports) and empty package files: no edges through them
    packages = {name for name, p in modules.items()
                if p.name == "__init__.py" and (name == "mscg" or not p.read_text(encoding="utf-8").strip())}
    graph = {name: (imported_modules(p) & set(modules)) - packages - {name} for name, p in modules.items()}
    seen, on_path = set(), []

    def visit(name):
        if name in on_path:
            raise AssertionError(f"import cycle: {' -> '.join(on_path[on_path.index(name):] + [name])}")
        if name in seen:
            return
        on_path.append(name)
        for target in sorted(graph[name]):
            visit(target)
        on_path.pop()
        seen.add(name)

    for name in sorted(graph):
        visit(name)
