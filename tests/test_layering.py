"""The layer rule of DESIGN §1, checked on the source: models -> export -> plugins -> engines ->
serving (artifact.py beside engines), jobs/checks/search and then cli on top; no import runs
upward, no import circle, and the package imports with none of its optional backends (and without torch) installed.

Every `import` / `from ... import` of a vitdeploy module counts, function-local ones included: a
lazy import still makes the lower room depend on the higher one. `validate --reference` without
torch is tests/test_reference.py's (`test_validate_without_torch_*`).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set, Tuple

import vitdeploy

PACKAGE = Path(vitdeploy.__file__).parent

# Rank of each room (longest dotted prefix wins); an import may go to the same rank or lower.
LAYERS: Dict[str, int] = {
    # the floor: every room may use these
    "vitdeploy": 0,  # the package's __init__ (__version__)
    "vitdeploy.errors": 0,
    "vitdeploy.fileio": 0,
    "vitdeploy.optional": 0,
    # the flow of data
    "vitdeploy.models": 1,
    "vitdeploy.export": 2,
    "vitdeploy.plugins": 3,
    "vitdeploy.engines": 4,
    # judging artifacts: parity metrics/thresholds, reference outputs, the latency protocol (no builds, no loads)
    "vitdeploy.validation": 4,
    # the one reader of .onnx files and engine manifests: beside engines (engines/build reads the ONNX
    # through it, it reads manifests through engines/manifest)
    "vitdeploy.artifact": 4,
    "vitdeploy.serving": 6,
    # on top: the jobs behind the verbs, then the command line
    "vitdeploy.checks": 7,
    "vitdeploy.jobs": 7,
    "vitdeploy.search": 7,
    "vitdeploy.cli": 8,
}
# What `import vitdeploy` / the CLI must not need (DESIGN §1: one lazy importer each).
OPTIONAL_TOP_LEVEL = ("torch", "tensorrt", "tensorrt_rtx", "pytriton", "tritonclient", "matplotlib", "pycuda",
                      "cuda", "pynvml", "polygraphy")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> Dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, known: Set[str]) -> List[Tuple[str, int]]:
    """(imported vitdeploy module, line) for every import in the file, at any depth."""
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = name.split(".")
                base = base[:len(base) - node.level + (1 if is_pkg else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from pkg import sub` imports the submodule when there is one
            out += [(f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod, node.lineno) for a in node.names]
    return [(m, line) for m, line in out if m == "vitdeploy" or m.startswith("vitdeploy.")]


def _rank(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise KeyError(module)


def _graph() -> Dict[str, List[Tuple[str, int]]]:
    mods = _modules()
    return {name: _imports(name, path, set(mods)) for name, path in mods.items()}


def test_every_module_has_a_layer():
    missing = [m for m in _modules() if not any(m == p or m.startswith(p + ".") for p in LAYERS)]
    assert not missing, f"place these modules in LAYERS (DESIGN §1): {missing}"


def test_no_import_runs_upward():
    upward = [f"{src} (rank {_rank(src)}) line {line} imports {dst} (rank {_rank(dst)})"
              for src, deps in _graph().items() for dst, line in deps if _rank(dst) > _rank(src)]
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_no_import_cycle():
    """No circle between modules. A package's __init__ importing its own submodule to re-export it
    (plugins/__init__ -> plugins.build) is the package's face, not a dependency: left out."""
    graph = {src: sorted({dst for dst, _ in deps if dst != src and not dst.startswith(src + ".")})
             for src, deps in _graph().items()}
    state: Dict[str, int] = {}  # 1 on the stack, 2 done
    stack: List[str] = []
    cycles = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in graph.get(m, ()):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_package_and_cli_import_without_optional_backends():
    """`import vitdeploy`, the CLI and the jobs modules with torch, TensorRT, PyTriton, matplotlib,
    CUDA Python and NVML all unimportable; `vitdeploy --help` still answers."""
    code = f"""
import sys
BLOCKED = {OPTIONAL_TOP_LEVEL!r}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(name + " is blocked in this test")
sys.meta_path.insert(0, Block())
import vitdeploy, vitdeploy.cli, vitdeploy.jobs, vitdeploy.checks, vitdeploy.artifact
try:
    vitdeploy.cli.main(["--help"])
except SystemExit as e:
    assert e.code == 0, e.code
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not loaded, loaded
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=PACKAGE.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage: vitdeploy" in proc.stdout
