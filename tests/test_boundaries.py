"""The stages meet only in the profile and the shared modules (systemd/, linux/, ...):
synthesis, validation and what prints results never reach into tracing, not even through a
module they import."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "autosandbox"
# Modules that must not depend on autosandbox.trace, directly or through other modules.
KEPT_APART = ("autosandbox.synth", "autosandbox.validate", "autosandbox.report",
              "autosandbox.results", "autosandbox.linux")


def _name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every autosandbox module `path` imports, at the top or inside a function."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}  # `from pkg import mod`
    return {m for m in out if m.split(".")[0] == "autosandbox"}


def _graph() -> dict[str, set[str]]:
    modules = {_name(p): p for p in PKG.rglob("*.py")}
    return {m: {i for i in _imports(p) if i in modules} for m, p in modules.items()}


def _reaches_trace(graph: dict[str, set[str]], start: str,
                   package: str = "autosandbox.trace") -> list[str] | None:
    """The import chain from `start` to a module of `package`, or None."""
    chains = {start: [start]}
    todo = [start]
    while todo:
        m = todo.pop()
        for dep in sorted(graph.get(m, ())):
            if dep in chains:
                continue
            chains[dep] = [*chains[m], dep]
            if dep == package or dep.startswith(package + "."):
                return chains[dep]
            todo.append(dep)
    return None


def test_graph_sees_the_imports_it_checks() -> None:
    graph = _graph()
    assert "autosandbox.linux.audit" in graph["autosandbox.validate.trials"]
    assert _reaches_trace(graph, "autosandbox.learn") is not None


def test_no_stage_after_tracing_reaches_into_it() -> None:
    graph = _graph()
    kept = [m for m in graph if any(m == k or m.startswith(k + ".") for k in KEPT_APART)]
    assert len(kept) > 20
    leaks = {m: chain for m in kept if (chain := _reaches_trace(graph, m)) is not None}
    assert leaks == {}


def test_synthesis_never_reaches_into_validation() -> None:
    """Data flows one way: the catalogue says how each directive relaxes (synth/grants.py),
    validation only runs the trials and applies it."""
    graph = _graph()
    synth = [m for m in graph if m.startswith("autosandbox.synth.")]
    assert len(synth) > 10
    leaks = {m: chain for m in synth
             if (chain := _reaches_trace(graph, m, "autosandbox.validate")) is not None}
    assert leaks == {}
