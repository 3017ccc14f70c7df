"""The layout is the architecture: one namespace, and no layer imports a layer above it.

Layers, lowest first (a module may import its own layer and those below):

    alchemist.schema                                   0
    alchemist.answers, alchemist.adapters              1   (neither imports the other)
    alchemist.optimizers, alchemist.probes             2
    alchemist.daemon: config, tasks                    3
                      telemetry                        4
                      storage                          5
                      serving                          6
                      learning                         7
                      runtime, http                    8
                      cli, __main__, sim, ops          9
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "alchemist"

_LAYERS = {
    "alchemist.schema": 0, "alchemist": 0,
    "alchemist.answers": 1, "alchemist.adapters": 1,
    "alchemist.optimizers": 2, "alchemist.probes": 2,
    "alchemist.daemon": 3, "alchemist.daemon.config": 3, "alchemist.daemon.tasks": 3,
    "alchemist.daemon.telemetry": 4,
    "alchemist.daemon.storage": 5,
    "alchemist.daemon.serving": 6,
    "alchemist.daemon.learning": 7,
    "alchemist.daemon.runtime": 8, "alchemist.daemon.http": 8,
    "alchemist.daemon.cli": 9, "alchemist.daemon.__main__": 9, "alchemist.daemon.sim": 9,
    "alchemist.daemon.ops": 9,
}
#: same-level siblings that must stay apart
_APART = {("alchemist.answers", "alchemist.adapters"), ("alchemist.adapters", "alchemist.answers"),
          ("alchemist.optimizers", "alchemist.probes"), ("alchemist.probes", "alchemist.optimizers")}


def _modules() -> dict[str, Path]:
    out = {}
    found = (Path(d) / f for d, _, files in os.walk(PACKAGE, followlinks=True) for f in files)
    for path in sorted(p for p in found if p.suffix == ".py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _group(module: str) -> str:
    """The longest prefix of ``module`` that names a layer."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        head = ".".join(parts[:n])
        if head in _LAYERS:
            return head
    raise AssertionError(f"{module} is in no layer; add it to the table in {__file__}")


def _imports(path: Path, module: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")[: -node.level] if path.name != "__init__.py" \
                    else module.split(".")[: len(module.split(".")) - node.level + 1]
                found.add(".".join([*base, *([node.module] if node.module else [])]))
            elif node.module:
                found.add(node.module)
    return {f for f in found if f == "alchemist" or f.startswith("alchemist.")}


def test_the_namespace_holds_every_layer_and_nothing_generic() -> None:
    names = {p.name for p in PACKAGE.iterdir() if not p.name.startswith((".", "__"))}
    assert {"answers", "adapters", "optimizers", "probes", "daemon", "schema.py"} <= names
    for layer in ("answers", "adapters", "optimizers", "probes", "daemon"):
        assert (PACKAGE / layer / "__init__.py").is_file(), layer


@pytest.mark.parametrize("module", sorted(_modules()))
def test_no_module_imports_a_layer_above_it(module: str) -> None:
    path = _modules()[module]
    mine = _group(module)
    for target in sorted(_imports(path, module)):
        theirs = _group(target)
        assert _LAYERS[theirs] <= _LAYERS[mine], (
            f"{module} (layer {mine}) imports {target} (layer {theirs}, above it)")
        assert (mine, theirs) not in _APART, f"{module} imports {target}: these layers stay apart"


def _source_files() -> list[Path]:
    dirs = ("answers", "adapters", "optimizers", "probes", "daemon", "benchmarks")
    return sorted([ROOT / "alchemist" / "__init__.py", ROOT / "alchemist" / "schema.py",
                   *(p for d in dirs for p in (ROOT / d).rglob("*.py"))])


def test_modules_and_functions_stay_small() -> None:
    """STYLE.md: modules of 400 lines or fewer, functions of 60 or fewer (tests excepted)."""
    too_big = []
    for path in _source_files():
        text = path.read_text()
        name = path.relative_to(ROOT)
        if text.count("\n") > 400:
            too_big.append(f"{name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > 60:
                    too_big.append(f"{name}:{node.lineno} {node.name}() is {length} lines")
    assert not too_big, "split by responsibility:\n" + "\n".join(too_big)
