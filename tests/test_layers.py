"""The package's layering: no import cycles, no oversized modules, and the light entry points
(`digitlab --help`, `digitlab models`, the web app's modules) stay free of torch."""

import ast
import subprocess
import sys
from pathlib import Path

import digitlab

PACKAGE = Path(digitlab.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str) -> set[str]:
    """digitlab modules that ``path`` imports anywhere (module level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("digitlab")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("digitlab"):
                continue
            # `from . import x` and `from .pkg import module` name modules, not attributes
            for a in node.names:
                sub = f"{mod}.{a.name}"
                found.add(sub if (PACKAGE.parent / (sub.replace(".", "/") + ".py")).is_file()
                          or (PACKAGE.parent / sub.replace(".", "/")).is_dir() else mod)
    return found - {name}


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        # importing a.b.c runs a/__init__ and a/b/__init__ too, but those are separate nodes
        graph[name] = {m for m in _imports(path, name) if m in modules}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert "digitlab.training" in graph and "digitlab.runtime" in graph["digitlab.training"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_no_source_file_over_600_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 600}
    assert not long


def test_light_entry_points_do_not_import_torch():
    """`digitlab --help`, `digitlab models` and the web app's modules (until a model loads)
    import neither torch nor the training code."""
    code = """
import contextlib, io, sys
from digitlab.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    for argv in (["--help"], ["train", "--help"], ["models"]):
        try:
            main(argv)
        except SystemExit:
            pass
assert "cnn" in out.getvalue() and "--epochs" in out.getvalue()
import digitlab.server.app, digitlab.predict, digitlab.config
print(sorted(m for m in ("torch", "digitlab.training", "digitlab.evaluation") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
