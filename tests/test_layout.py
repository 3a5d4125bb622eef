"""The package's layout rules, checked on the source: imports only go down the layers that docs/architecture.md
lists (its table is read here, so the document and the code cannot drift apart), no function over 80 lines and
no file over 600 lines in diffmesh/."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "diffmesh"
MAX_FUNCTION_LINES = 80
MAX_FILE_LINES = 600


def _layers() -> dict[str, int]:
    """Module or package name (relative to diffmesh/, e.g. 'pipeline', 'video') -> layer number, 1 = top."""
    table = {}
    for line in (ROOT / "docs" / "architecture.md").read_text().splitlines():
        m = re.match(r"\|\s*(\d+)\s*\|([^|]*)\|", line)
        if m:
            for name in re.findall(r"`([\w/.]+)`", m.group(2)):
                table[name.rstrip("/").removesuffix(".py")] = int(m.group(1))
    return table


def _unit(module: str) -> str:
    """'diffmesh.video.pose' -> 'video'; 'diffmesh.camera' -> 'camera'."""
    return module.split(".")[1]


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield path, ".".join(parts), path.name == "__init__.py"


def _imports(path: Path, module: str, is_package: bool) -> set[str]:
    """Absolute names of the diffmesh modules `path` imports (top-level and inside functions)."""
    found = set()
    package = module if is_package else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{a.name}" for a in node.names] if not node.module or node.level else [target]
            found.update(n for n in names if n.startswith("diffmesh."))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("diffmesh."))
    return found


def test_every_module_has_a_layer():
    layers = _layers()
    assert len(set(layers.values())) >= 5, "docs/architecture.md lost its layer table"
    missing = sorted({_unit(m) for _, m, _ in _modules() if m != "diffmesh"} - set(layers))
    assert not missing, f"modules without a layer in docs/architecture.md: {missing}"


def test_no_module_imports_from_a_layer_above_it():
    layers = _layers()
    upward = []
    for path, module, is_package in _modules():
        if module == "diffmesh":
            continue
        own = layers.get(_unit(module))
        if own is None:                                  # reported by test_every_module_has_a_layer
            continue
        for target in _imports(path, module, is_package):
            if target.count(".") >= 1 and _unit(target) in layers and layers[_unit(target)] < own:
                upward.append(f"{module} (layer {own}) imports {target} (layer {layers[_unit(target)]})")
    assert not upward, "\n".join(upward)


def test_functions_and_files_stay_short():
    long = []
    for path, module, _ in _modules():
        source = path.read_text()
        if len(source.splitlines()) > MAX_FILE_LINES:
            long.append(f"{module}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{module}.{node.name}: {n} lines")
    assert not long, "\n".join(long)
