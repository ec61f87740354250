"""The house rules of docs/architecture.md, checked on the source: the one-way import order of the
packages, no import cycles, no side effects on import, file and function sizes."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("search_spaces", "nas", "scaling")

# The one-way order of docs/architecture.md, lowest first: a module may import its own layer and the
# layers below it, never one above. The command-line modules sit on top of every library layer.
LAYERS = (
    ("search_spaces",),
    ("search_spaces.interop",),
    ("nas.config",),
    ("nas.proxy",),
    ("nas.final",),
    ("nas.supernet",),
    ("nas.cluster",),
    ("nas.search",),
    ("nas.fidelity",),
    ("scaling",),
    ("nas.recipe",),
)
CLI_MODULES = ("nas.cli", "scaling.cli", "search_spaces.cli", "search_spaces.interop.cli")
SHARED_CLI = ("nas.cli.common",)  # what the command-line modules of several packages share


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, path: Path, *, top_level_only: bool = False) -> set[str]:
    """Our modules that ``module`` imports (``from pkg import name`` counts as ``pkg.name`` when that is a module)."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    known = _sources()
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.If) and top_level_only:  # `if TYPE_CHECKING:` imports are not imports at run time
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, path.name == "__init__.py", node)
            names = [f"{target}.{a.name}" if f"{target}.{a.name}" in known else target for a in node.names]
        else:
            continue
        found.update(n for n in names if n.split(".")[0] in PACKAGES)
    found.discard(module)
    return found


def _is_cli(module: str) -> bool:
    return any(module == c or module.startswith(c + ".") for c in CLI_MODULES)


def _layer(module: str) -> int:
    best, rank = -1, -1
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, rank = len(p), i
    assert rank >= 0, f"{module} is in no layer of docs/architecture.md"
    return rank


def test_the_layers_table_matches_the_docs() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    for prefixes in LAYERS:
        for p in prefixes:
            assert f"`{p}`" in doc, f"docs/architecture.md does not name the layer {p}"


def test_imports_follow_the_one_way_order() -> None:
    bad = []
    for module, path in _sources().items():
        for target in _imports(module, path):
            if _is_cli(target):
                if not _is_cli(module) or (target.split(".")[0] != module.split(".")[0] and target not in SHARED_CLI
                                           and module != "nas.cli.entry"):
                    bad.append(f"{module} imports the command-line module {target}")
            elif not _is_cli(module) and _layer(target) > _layer(module):
                bad.append(f"{module} (layer {LAYERS[_layer(module)][0]}) imports {target} "
                           f"(layer {LAYERS[_layer(target)][0]}, above it)")
    assert not bad, "\n".join(bad)


def test_no_import_cycles() -> None:
    """Neither between layers (any import, lazy ones included) nor between modules at import time."""
    sources = _sources()
    graph = {m: _imports(m, p, top_level_only=True) & set(sources) for m, p in sources.items()}
    for m in graph:  # a package's face may import its own modules; its modules importing the face is the cycle
        graph[m] = {t for t in graph[m] if not (m.startswith(t + ".") and t in sources)} | (
            graph[m] & {t for t in graph[m] if m.startswith(t + ".")})
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_the_checker_sees_a_cycle_and_an_upward_import(tmp_path: Path) -> None:
    """The checks above can fail: an upward import is a layer violation."""
    assert _layer("nas.search.objective") > _layer("nas.cluster.lease")
    assert _layer("search_spaces.latency") < _layer("nas.proxy.train")
    assert _is_cli("nas.cli.search") and not _is_cli("nas.search.config")


def test_importing_the_packages_changes_nothing_in_the_process() -> None:
    code = ("import os, sys; os.environ.pop('OMP_WAIT_POLICY', None); before = dict(os.environ); "
            "import logging; handlers = list(logging.getLogger().handlers); "
            "import nas, scaling, search_spaces, nas.proxy, nas.search, nas.cluster, nas.fidelity, nas.config, "
            "search_spaces.interop; "
            "assert 'OMP_WAIT_POLICY' not in os.environ; assert dict(os.environ) == before, 'environment changed'; "
            "assert logging.getLogger().handlers == handlers, 'logging configured'; "
            "assert 'matplotlib' not in sys.modules or sys.modules['matplotlib'].get_backend() != 'agg', 'backend set'")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=env)


def test_importing_nas_loads_no_torch() -> None:
    code = "import sys, nas, nas.cli.entry; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.parametrize("command", ["nas-search", "nas-grid-scale", "nas-cost", "nas-export", "nas-proxy-check",
                                     "nas-train", "nas-derive"])
def test_console_scripts_set_the_omp_policy_before_torch_loads(command: str) -> None:
    code = ("import os, sys; os.environ.pop('OMP_WAIT_POLICY', None); import nas.cli.entry as e; "
            f"e.prepare_process(); assert os.environ['OMP_WAIT_POLICY'] == 'PASSIVE'; "
            f"assert 'torch' not in sys.modules; assert {command!r} in e.COMMANDS")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_every_console_script_goes_through_the_entry_module() -> None:
    cfg = (ROOT / "setup.cfg").read_text()
    block = cfg.split("console_scripts =", 1)[1].split("\n\n", 1)[0]
    scripts = dict(line.strip().split(" = ") for line in block.strip().splitlines())
    assert set(scripts) == {"nas-search", "nas-grid-scale", "nas-cost", "nas-export", "nas-proxy-check",
                            "nas-train", "nas-derive"}
    assert all(v.startswith("nas.cli.entry:") for v in scripts.values()), scripts


def _library_files() -> list[Path]:
    return [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]


def test_no_source_file_over_400_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in _library_files() if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def test_no_function_over_60_lines() -> None:
    long = []
    for p in _library_files():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > 60:
                    long.append(f"{p.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, "\n".join(long)


def test_every_package_has_a_face() -> None:
    """Each package's __init__ declares its public names, and each of them exists."""
    import importlib

    for pkg in ("search_spaces", "search_spaces.interop", "nas.config", "nas.proxy", "nas.search", "nas.cluster",
                "nas.fidelity", "scaling"):
        mod = importlib.import_module(pkg)
        assert mod.__all__, pkg
        for name in mod.__all__:
            assert getattr(mod, name) is not None, f"{pkg}.{name}"


def _any_in_annotations(path: Path) -> int:
    count = 0
    for node in ast.walk(ast.parse(path.read_text())):
        anns: list[ast.expr] = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            anns = [x.annotation for x in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]
                    if x is not None and x.annotation is not None]
            anns += [node.returns] if node.returns is not None else []
        elif isinstance(node, ast.AnnAssign):
            anns = [node.annotation]
        for ann in anns:
            text = ann.value if isinstance(ann, ast.Constant) and isinstance(ann.value, str) else ast.unparse(ann)
            count += sum(1 for tok in ast.walk(ast.parse(text, mode="eval")) if isinstance(tok, ast.Name)
                         and tok.id == "Any")
    return count


def test_few_any_annotations_outside_the_command_line_modules() -> None:
    """``Any`` where a real type exists hides mistakes from mypy; the library keeps fewer than 40."""
    counts = {str(p.relative_to(ROOT)): n for p in _library_files()
              if not _is_cli(_module_name(p)) and (n := _any_in_annotations(p))}
    assert sum(counts.values()) < 40, sorted(counts.items(), key=lambda kv: -kv[1])


def test_the_library_never_chooses_a_matplotlib_backend() -> None:
    """Pictures are drawn on ``matplotlib.figure.Figure`` (nas.config.figures): no ``matplotlib.use``, no pyplot."""
    found = [f"{p.relative_to(ROOT)}:{n}" for p in _library_files()
             for n, line in enumerate(p.read_text().splitlines(), 1)
             if "matplotlib.use(" in line.split("#")[0] and "``" not in line or "import matplotlib.pyplot" in line]
    assert not found, found


def test_a_plot_leaves_the_process_backend_alone(tmp_path: Path) -> None:
    code = ("import matplotlib, sys; from scaling.plots import plot_variants; "
            f"ok = plot_variants([{{'phi': 1, 'macs_ratio': 2.1, 'macs': 8e8, 'mode': 'compound'}}], "
            f"__import__('pathlib').Path({str(tmp_path / 'v.png')!r})); "
            "assert ok and 'matplotlib.pyplot' not in sys.modules, sys.modules.keys()")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    assert (tmp_path / "v.png").read_bytes()[:4] == b"\x89PNG"


_CITED = __import__("re").compile(r"(?<![\w/.~-])((?:nas|scaling|search_spaces|bench|scripts|tests|experiments|docs)/"
                                  r"[\w./-]+\.(?:py|md|yaml|yml|png|csv|json|sh))(?:::(\w+))?")
_LINK = __import__("re").compile(r"\]\(([\w./-]+\.(?:md|png|csv|yaml|py))(?:#[\w-]*)?\)")


def test_no_page_cites_a_file_that_is_not_in_the_repository() -> None:
    """The README and every docs/ page: each repository path they name exists (and each cited test in it)."""
    missing = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text()
        for path, test in _CITED.findall(text):
            target = ROOT / path.rstrip(".")
            if not target.exists():
                missing.append(f"{page.name}: {path}")
            elif test and f"def {test}(" not in target.read_text():
                missing.append(f"{page.name}: {path}::{test}")
        for link in _LINK.findall(text):
            if not (page.parent / link).exists():
                missing.append(f"{page.name}: link {link}")
    assert not missing, missing
