"""Layers import downward only (DESIGN.md): a test, so a wrong import fails CI instead of a review."""

import ast
from pathlib import Path

import lamina

PACKAGE = Path(lamina.__file__).parent

# Layer number of each top-level part of the package; a module may import its own layer or lower.
LAYERS = {
    "core": 0,
    "demo": 0,  # bundled data, no logic
    "data": 1,
    "models": 2,
    "training": 3,
    "evaluation": 3,
    "hub": 3,
    "serving": 4,
    "gateway": 4,
    "rag": 4,
    "guardrails": 4,
    "monitoring": 5,
    "console": 6,
    "cli": 6,
    "quickstart": 6,
    "__main__": 6,
    "__init__": 0,
}


def part_of(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else "__init__"


def lamina_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
    return [name for name in found if name == "lamina" or name.startswith("lamina.")]


def test_every_part_has_a_layer() -> None:
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    missing = sorted((modules | packages) - set(LAYERS))
    assert not missing, f"give these a layer in LAYERS (and DESIGN.md): {missing}"


def test_layers_import_downward_only() -> None:
    violations = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        own = part_of(".".join(rel.parts))
        for imported in lamina_imports(path):
            if imported == "lamina":
                continue
            target = part_of(imported)
            if LAYERS[target] > LAYERS[own]:
                violations.append(f"{rel} (layer {LAYERS[own]}) imports {imported} (layer {LAYERS[target]})")
    assert not violations, "\n".join(violations)


def _module_graph() -> dict[str, set[str]]:
    """module → the lamina modules it imports, at the top or inside a function (a lazy import is still
    a dependency, and a cycle through one is still a cycle)."""
    graph: dict[str, set[str]] = {}
    modules = {
        ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
        for p in PACKAGE.rglob("*.py")
    }
    for name, path in modules.items():
        targets = set()
        for imported in lamina_imports(path):
            while imported and imported not in modules:  # `from lamina.x import name` → lamina.x
                imported = imported.rpartition(".")[0]
            if imported and imported != name and imported != "lamina":
                targets.add(imported)
        graph[name] = targets
    return graph


def test_the_data_layer_has_no_import_cycles() -> None:
    """pipeline (builds), versions (reading) and append (the live path) import one way only."""
    graph = _module_graph()
    data = {m for m in graph if m.startswith("lamina.data.")}
    cycles = []
    for start in sorted(data):
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node] & data:
                if nxt == start:
                    cycles.append(" → ".join([*path, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    assert not cycles, cycles
