"""The package's stages import one way: a module may import its own stage and the stages below it.

docs/architecture.md draws the same order. A lazy import inside a function counts too: it is still a
dependency, only a later one.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mtlcli"

# lowest first; a module of one layer may import only layers at or before its own
LAYERS = [
    ["errors", "atomic", "extras", "vocabulary"],
    ["config", "registry", "runs"],
    ["data"],
    ["tasks"],
    ["runtime"],
    ["components", "plugin"],
    ["model"],
    ["scoring"],
    ["inference"],
    ["reports"],
    ["training"],
    ["export"],
    ["api"],
    ["serve"],
    ["tuning"],
    ["cli"],
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def stage(module: str) -> str:
    """``mtlcli.data.rows`` -> ``data``; the package itself (``mtlcli``) has no stage."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mtlcli") and not node.level:
            found.add(node.module)
            if node.module == "mtlcli":  # from mtlcli import runs, atomic
                found.update(f"mtlcli.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("mtlcli."))
    return found


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def test_every_stage_is_placed():
    stages = {stage(name) for name in modules()} - {"", "__main__"}
    assert stages <= set(RANK), f"place these in LAYERS (and docs/architecture.md): {sorted(stages - set(RANK))}"


def test_imports_point_down_the_pipeline():
    upward = []
    for name, path in modules().items():
        own = stage(name)
        if own not in RANK:
            continue
        for target in imports(path):
            other = stage(target)
            if other in RANK and RANK[other] > RANK[own]:
                upward.append(f"{name} imports {target} ({own} is below {other})")
    assert not upward, "\n".join(upward)


def test_no_circles():
    # the package root only holds the version and a lazy accessor for the API, so it is left out
    inner = {name: path for name, path in modules().items() if name != "mtlcli"}
    graph = {name: {t for t in imports(path) if t in inner and t != name} for name, path in inner.items()}
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> list[str] | None:
        if name in trail:
            return trail[trail.index(name):] + [name]
        if name in done:
            return None
        for target in sorted(graph[name]):
            if circle := visit(target, trail + [name]):
                return circle
        done.add(name)
        return None

    for name in sorted(graph):
        circle = visit(name, [])
        assert circle is None, " -> ".join(circle)
