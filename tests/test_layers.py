"""The package's import structure: stages import only stages below them (or beside them),
no import circle, no private name imported across modules. Every import counts, also the
ones inside functions (a lazy import is still a dependency)."""

import ast
from pathlib import Path

import medxfer

SRC = Path(medxfer.__file__).parent

#: Stages from the bottom up; a module may import its own stage or a lower one.
LAYERS = [
    {"medxfer", "errors", "hashing", "settings", "cores", "ledger"},
    {"images", "preprocess", "corruptions", "metrics", "splits", "data", "card"},
    {"backbones"},
    {"engine"},
    {"features", "checks"},
    {"head", "ood", "baselines"},
    {"model_io"},
    {"records", "experiments", "report", "cam", "export"},
    {"pipeline", "finetune", "predictor"},
    {"studies", "serve", "dicom_node"},
    {"cli", "__main__"},
]


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "medxfer"


def _layer(module: str) -> int:
    stage = _stage(module)
    for i, names in enumerate(LAYERS):
        if stage in names:
            return i
    raise AssertionError(f"module {module} (stage '{stage}') has no layer in tests/test_layers.py")


def _imports(path: Path):
    """(imported medxfer module, names, line) for every import of ``path``, resolved."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "medxfer":
                continue
            names = [a.name for a in node.names]
            # "from . import x" imports the submodule x when there is one
            subs = [n for n in names if (SRC.parent / Path(*target.split("."), n)).with_suffix(".py").is_file()
                    or (SRC.parent / Path(*target.split("."), n) / "__init__.py").is_file()]
            for n in subs:
                yield f"{target}.{n}", [], node.lineno
            yield target, [n for n in names if n not in subs], node.lineno
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "medxfer":
                    yield a.name, [], node.lineno


def _graph():
    files = sorted(SRC.rglob("*.py"))
    return {_module_name(f): (f, list(_imports(f))) for f in files}


def test_every_module_imports_only_its_own_stage_or_lower_ones():
    upward = []
    for module, (path, imports) in _graph().items():
        for target, _, line in imports:
            if _layer(target) > _layer(module):
                upward.append(f"{path.relative_to(SRC)}:{line} {module} -> {target}")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_import_circle():
    graph = _graph()
    edges = {m: {t for t, _, _ in imps if t in graph and t != m} for m, (_, imps) in graph.items()}
    # a package's __init__ importing its own submodules is how packages work, not a circle
    for m in edges:
        edges[m] = {t for t in edges[m] if not (t.startswith(m + ".") and graph[m][0].name == "__init__.py")}
    seen, stack, cycles = set(), [], []

    def visit(m):
        if m in stack:
            cycles.append(stack[stack.index(m):] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for t in sorted(edges[m]):
            visit(t)
        stack.pop()

    for m in sorted(edges):
        visit(m)
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_private_name_is_imported_from_another_module():
    found = []
    for module, (path, imports) in _graph().items():
        for target, names, line in imports:
            if target != module:
                found += [f"{path.relative_to(SRC)}:{line} {n} from {target}"
                          for n in names if n.startswith("_") and not n.startswith("__")]
    assert not found, "private names imported:\n" + "\n".join(found)


def test_the_layer_test_sees_the_known_edges():
    """The walk resolves relative, lazy and package imports (so the tests above can fail)."""
    graph = _graph()
    features = {t for t, _, _ in graph["medxfer.features"][1]}
    assert "medxfer.engine" in features and "medxfer.backbones" in features
    cli = {t for t, _, _ in graph["medxfer.cli"][1]}
    assert "medxfer.pipeline" in cli  # imported inside a function
    assert _layer("medxfer.cli") > _layer("medxfer.features") > _layer("medxfer.settings")
