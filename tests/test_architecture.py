"""The structure of the package, checked like behaviour (DESIGN.md section 2).

- the import layers (import-linter contract in pyproject.toml), ruff and mypy pass;
- ``import hpsearch.cli`` loads no TensorFlow, Keras, Optuna or scikit-learn;
- no module over 500 lines and no function over 80 lines, unless its docstring has a line
  ``Long: <why>`` (a long function is usually two concepts; when it is not, say why).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "hpsearch"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
_WHY = re.compile(r"^\s*Long:\s*\S", re.MULTILINE)
HEAVY = ("tensorflow", "keras", "optuna", "sklearn", "scipy", "pandas", "matplotlib", "torch", "jax")


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def _check(proc: subprocess.CompletedProcess[str], tool: str) -> None:
    assert proc.returncode == 0, f"{tool} failed:\n{proc.stdout[-8000:]}\n{proc.stderr[-4000:]}"


def test_import_layers():
    proc = _run("-c", "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())",
                "--no-cache")
    _check(proc, "lint-imports")


def test_ruff():
    _check(_run("-m", "ruff", "check", "hpsearch", "tests"), "ruff check hpsearch tests")


def test_mypy():
    _check(_run("-m", "mypy"), "mypy hpsearch")


def test_importing_the_cli_loads_nothing_heavy():
    code = (
        "import sys, hpsearch, hpsearch.cli\n"
        f"heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))\n"
        "print(','.join(heavy))\n"
    )
    proc = _run("-c", code, timeout=120)
    _check(proc, "import hpsearch.cli")
    assert proc.stdout.strip() == "", f"import hpsearch.cli loads {proc.stdout.strip()}"


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _over_limits(path: Path, root: Path = REPO) -> list[str]:
    """'path:line name (N lines)' for the module and each function past its limit with no ``Long:`` line."""
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text)
    where = path.relative_to(root)
    found = []
    lines = len(text.splitlines())
    if lines > MAX_MODULE_LINES and not _WHY.search(ast.get_docstring(tree) or ""):
        found.append(f"{where} ({lines} lines)")
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno is not None:
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES and not _WHY.search(ast.get_docstring(node) or ""):
                found.append(f"{where}:{node.lineno} {node.name} ({length} lines)")
    return found


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_and_function_sizes(path):
    found = _over_limits(path)
    assert not found, (
        f"over {MAX_MODULE_LINES} lines per module / {MAX_FUNCTION_LINES} per function: split it, or add a "
        f"line 'Long: <why>' to its docstring: {'; '.join(found)}"
    )


def test_the_size_check_sees_long_functions_and_their_reasons(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "m.py").write_text(f'def f():\n{body}\n\n\ndef g():\n    """Long: one table."""\n{body}\n')
    assert _over_limits(tmp_path / "m.py", tmp_path) == [f"m.py:1 f ({MAX_FUNCTION_LINES + 1} lines)"]


def test_the_package_is_typed():
    assert (PACKAGE / "py.typed").is_file()


def _package_of(module: str) -> str:
    """The concept package of a dotted module name (a kernel module is its own package)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _private_imports_across_packages(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        module = ".".join(path.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                    and node.module.split(".")[0] == root.name):
                continue
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                if private and _package_of(node.module) != _package_of(module):
                    found.append(f"{path.relative_to(root.parent)}: from {node.module} import {alias.name}")
    return found


def test_no_private_name_is_imported_from_another_package():
    """A seam that two packages need is public in the lower one (DESIGN.md section 2)."""
    assert _private_imports_across_packages(PACKAGE) == []


def test_the_private_import_check_sees_a_private_name_from_another_package(tmp_path):
    pkg = tmp_path / "hpsearch"
    (pkg / "trials").mkdir(parents=True)
    (pkg / "packing").mkdir()
    (pkg / "trials" / "runner.py").write_text("class _Fitted: ...\n")
    (pkg / "packing" / "runner.py").write_text("from hpsearch.trials.runner import _Fitted\n")
    (pkg / "trials" / "other.py").write_text("from hpsearch.trials.runner import _Fitted\n")  # same package: fine
    assert _private_imports_across_packages(pkg) == [
        "hpsearch/packing/runner.py: from hpsearch.trials.runner import _Fitted"]


def test_the_top_holds_the_kernel_and_the_concepts_are_packages():
    top = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__"))
    packages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert len(top) <= 12, top
    assert len(packages) >= 8, packages
    for name in packages:  # each package says what it holds and what it may import
        doc = ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text(encoding="utf-8"))) or ""
        assert "May import" in doc, f"hpsearch/{name}/__init__.py: say what it holds and what it may import"


def test_the_readme_names_every_package_and_the_layer_contract_lists_them():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    where = readme.split("Where things live", 1)[1].split("\n## ", 1)[0]
    layers = (REPO / "pyproject.toml").read_text(encoding="utf-8").split("layers = [", 1)[1].split("]", 1)[0]
    for p in sorted(PACKAGE.iterdir()):
        if (p / "__init__.py").is_file():
            assert f"`{p.name}/`" in where, f"README 'Where things live' does not name hpsearch/{p.name}/"
            assert f'"{p.name}"' in layers or f" {p.name} " in layers or f'"{p.name} ' in layers, p.name
