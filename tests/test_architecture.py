"""The house rules of docs/architecture.md, checked on the source: floors (no upward imports), no
circles between modules, no imports of another module's private names.

Every import counts, including those inside functions (a lazy import is still an arrow).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "undiffuse"

#: Bottom to top. A module may import from its own floor and the floors below, never from above.
FLOORS: list[set[str]] = [
    {"errors", "io", "rng", "progress"},  # ground: no undiffuse imports but each other
    {"schedules", "diffusion", "losses", "samplers"},  # the math: torch and each other only
    {"nn", "data", "plots", "text"},  # networks, data and its writers
    {"config", "build"},  # configuration → objects
    {"runs", "model", "sampling", "conditioning", "editing", "adapters", "tables", "forecasting", "language"},  # a run and a trained model
    {"training", "baselines", "evaluation", "speed"},  # what uses models
    {"bench", "study"},  # measurements
    {"api", "cli", "__init__", "serve"},  # the front ends (serve: the HTTP API and page)
]
FLOOR = {name: i for i, names in enumerate(FLOORS) for name in names}


def _modules() -> dict[str, Path]:
    out = {}
    for p in SRC.rglob("*.py"):
        rel = p.relative_to(SRC.parent).with_suffix("")
        name = ".".join(rel.parts)
        out[name.removesuffix(".__init__")] = p
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, str]]:
    """(target module, imported name or "") for every undiffuse import in the module."""
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "undiffuse":
                continue
            for alias in node.names:
                full = f"{target}.{alias.name}"
                out.append((full, "") if full in MODULES else (target, alias.name))
        elif isinstance(node, ast.Import):
            out += [(a.name, "") for a in node.names if a.name.split(".")[0] == "undiffuse"]
    return out


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_area_has_a_floor():
    missing = sorted({_area(m) for m in MODULES} - set(FLOOR))
    assert not missing, f"give these a floor in FLOORS: {missing}"


def test_no_upward_imports():
    up = [
        f"{m} (floor {FLOOR[_area(m)]}) imports {t} (floor {FLOOR[_area(t)]})"
        for m, targets in GRAPH.items()
        for t, _ in targets
        if FLOOR.get(_area(t), -1) > FLOOR[_area(m)]
    ]
    assert not up, "\n".join(up)


@pytest.mark.parametrize("math_pkg", ["schedules", "diffusion", "losses", "samplers"])
def test_math_packages_import_no_framework(math_pkg):
    bad = [(m, t) for m, ts in GRAPH.items() if _area(m) == math_pkg for t, _ in ts
           if _area(t) in {"config", "nn", "training", "api", "cli", "build", "data", "runs", "model"}]  # fmt: skip
    assert not bad


def test_no_private_names_across_modules():
    bad = [f"{m} imports {t}.{n}" for m, ts in GRAPH.items() for t, n in ts
           if n.startswith("_") and t != m]  # fmt: skip
    assert not bad, "\n".join(bad)


def test_no_circles_between_modules():
    edges = {m: {t for t, _ in ts if t in MODULES and t != m} for m, ts in GRAPH.items()}
    # a package's __init__ re-exporting its own modules is not a circle of concerns
    edges = {m: {t for t in ts if not (t.startswith(m + ".") or m.startswith(t + ".") and t in _packages())}
             for m, ts in edges.items()}  # fmt: skip
    circles = set()
    for start in edges:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in edges.get(node, ()):
                if nxt == start:
                    circles.add(" → ".join(sorted(path)))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
    assert not circles, "\n".join(sorted(circles))


def _packages() -> set[str]:
    return {m for m, p in MODULES.items() if p.name == "__init__.py"}


def test_the_guard_sees_a_violation(tmp_path):
    """The checker is not vacuous: a made-up upward import and a private import are found."""
    fake = tmp_path / "fake.py"
    fake.write_text("from undiffuse.cli.main import main\nfrom undiffuse.io import _hidden\n")
    got = _imports("undiffuse.samplers.fake", fake)
    assert ("undiffuse.cli.main", "main") in got and ("undiffuse.io", "_hidden") in got
    assert FLOOR[_area("undiffuse.cli.main")] > FLOOR[_area("undiffuse.samplers.fake")]
