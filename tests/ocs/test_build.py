"""The application's compiled modules (ocs/build.py): setup.py compiles every one, they are
compiled or interpreted together with the codec's, and ``OCS_PURE_PYTHON=1`` imports them from
their sources (the pure-Python fallback is the whole CCR path, not only the codec)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import ocs.build
import protocol.build

ROOT = Path(__file__).resolve().parent.parent.parent


def test_setup_compiles_the_modules_the_application_names() -> None:
    setup_source = (ROOT / "setup.py").read_text()
    for name in ocs.build.COMPILED_MODULES:
        assert f'"{name.replace(".", "/")}.py"' in setup_source, f"setup.py skips {name}"


def test_the_application_and_the_codec_are_compiled_together() -> None:
    modules = (*protocol.build.compiled_modules(), *ocs.build.compiled_modules())
    compiled = {module.__name__: protocol.build.is_compiled(module) for module in modules}
    assert len(set(compiled.values())) == 1, f"{compiled}: rebuild (pip install -e .) or delete the .so files"


def test_no_compiled_application_module_is_older_than_its_source() -> None:
    # As tests/protocol/test_build.py checks the codec's: a stale .so would run the old code.
    libraries = [Path(str(module.__file__)) for name, module in sys.modules.items() if name.endswith("__mypyc")]
    for module in ocs.build.compiled_modules():
        if not protocol.build.is_compiled(module):
            continue
        assert libraries, f"{module.__name__} is compiled but no mypyc library is loaded"
        built = max(library.stat().st_mtime for library in libraries)
        source = ROOT / f"{module.__name__.replace('.', '/')}.py"
        assert source.stat().st_mtime <= built, f"{source.name} changed after the compiled build: pip install -e ."


def _pure_python_files(script: str) -> list[str]:
    """What ``script`` prints, run in a fresh interpreter on the pure-Python fallback."""
    environment = {**os.environ, protocol.build.PURE_PYTHON_VARIABLE: "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=environment, capture_output=True, text=True, check=True
    ).stdout.split()


def _sources(names: list[str] | tuple[str, ...]) -> list[str]:
    return [str(ROOT / f"{name.replace('.', '/')}.py") for name in names]


def test_pure_python_fallback_loads_the_application_sources() -> None:
    script = (
        "import ocs.charging.credit_control, ocs.build\n"
        "print(*(module.__file__ for module in ocs.build.compiled_modules()))\n"
    )
    assert _pure_python_files(script) == _sources(ocs.build.COMPILED_MODULES)


def test_pure_python_fallback_holds_for_balance_imported_before_ocs() -> None:
    # The tests of the engine (and their fixtures) import balance first: its own switch
    # (balance/__init__.py) must choose the sources before ocs's can.
    balance_modules = [name for name in ocs.build.COMPILED_MODULES if name.startswith("balance.")]
    script = (
        "import importlib, sys\n"
        f"modules = [importlib.import_module(name) for name in {balance_modules!r}]\n"
        "assert 'ocs' not in sys.modules\n"
        "print(*(module.__file__ for module in modules))\n"
    )
    assert balance_modules and _pure_python_files(script) == _sources(balance_modules)
