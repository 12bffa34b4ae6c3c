"""The compiled build (setup.py, the default install): the modules it compiles are either all
compiled or all interpreted, a compiled module is never older than its source, so that a stale
``.so`` (which Python loads in preference to the ``.py`` next to it) cannot pass for the current
code, and ``OCS_PURE_PYTHON=1`` runs the sources beside it (protocol/README.md, "Compiled build")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import protocol.codec
from protocol.build import COMPILED_MODULES, PURE_PYTHON_VARIABLE, compiled_modules, is_compiled

ROOT = Path(__file__).resolve().parent.parent.parent
COMPILED_BY_SETUP = compiled_modules()
REBUILD = "rebuild (pip install -e .) or delete the .so files: protocol/README.md, 'Compiled build'"


def _loaded_from(module: ModuleType) -> Path:
    assert module.__file__ is not None
    return Path(module.__file__)


def test_setup_compiles_the_modules_the_codec_names() -> None:
    setup_source = (ROOT / "setup.py").read_text()
    for name in COMPILED_MODULES:
        path = name.replace(".", "/")
        assert f'"{path}.py"' in setup_source or f'"{path}/__init__.py"' in setup_source, f"setup.py skips {name}"


def test_the_codec_knows_whether_it_is_compiled() -> None:
    assert protocol.codec.MYPYC_COMPILED is is_compiled(protocol.codec)


def test_all_or_none_of_the_modules_are_compiled() -> None:
    compiled = {module.__name__: is_compiled(module) for module in COMPILED_BY_SETUP}
    assert len(set(compiled.values())) == 1, f"{compiled}: {REBUILD}"


def test_no_compiled_module_is_older_than_its_source() -> None:
    # Each compiled module is a small shim; the code of them all is in one shared library,
    # "<hash>__mypyc", which every build writes anew (an unchanged shim is not rebuilt).
    libraries = [Path(str(module.__file__)) for name, module in sys.modules.items() if name.endswith("__mypyc")]
    for module in COMPILED_BY_SETUP:
        loaded = _loaded_from(module)
        if loaded.suffix == ".py":
            continue
        assert libraries, f"{loaded.name} is compiled but no mypyc library is loaded"
        built = max(library.stat().st_mtime for library in libraries)
        source = loaded.with_name(loaded.name.split(".")[0] + ".py")
        assert source.stat().st_mtime <= built, f"{source.name} changed after the compiled build: {REBUILD}"


def test_pure_python_fallback_loads_the_sources() -> None:
    # OCS_PURE_PYTHON=1 (protocol/build.py): the interpreted codec runs even beside a compiled
    # build, so the fallback can be tested and measured on the same install.
    script = (
        "import protocol.codec, protocol.dictionary\n"
        "from protocol.build import codec_build\n"
        "print(codec_build(), protocol.codec.MYPYC_COMPILED, protocol.dictionary.__file__)\n"
    )
    environment = {**os.environ, PURE_PYTHON_VARIABLE: "1", "PYTHONPATH": str(ROOT)}
    printed = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=environment, capture_output=True, text=True, check=True
    ).stdout.split()
    assert printed == ["pure", "False", str(ROOT / "protocol" / "dictionary" / "__init__.py")]
