"""The style rules that matter, as tests: ruff, mypy --strict, and the layer boundaries."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)


def test_ruff_lint_is_clean() -> None:
    result = _run(sys.executable, "-m", "ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean() -> None:
    result = _run(sys.executable, "-m", "ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean() -> None:
    result = _run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


# DESIGN.md "Layers and who may import whom".
FORBIDDEN = {
    "protocol": {"ocs", "balance", "simulator", "redis", "structlog", "prometheus_client"},
    "balance": {"ocs", "protocol", "simulator"},
    "simulator": {"ocs", "balance"},
}
# The sans-IO core must not touch the loop; only protocol/aio/ may.
SANS_IO_FORBIDDEN = {"asyncio", "uvloop", "socket", "selectors"}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layer_boundaries(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imports(path) & FORBIDDEN[package])
        for path in (ROOT / package).rglob("*.py")
        if _imports(path) & FORBIDDEN[package]
    }
    assert offenders == {}


def test_protocol_core_is_sans_io() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imports(path) & SANS_IO_FORBIDDEN)
        for path in (ROOT / "protocol").rglob("*.py")
        if "aio" not in path.relative_to(ROOT / "protocol").parts and _imports(path) & SANS_IO_FORBIDDEN
    }
    assert offenders == {}
