"""The opt-in compiled build (setup.py, OCS_MYPYC=1): the modules it compiles are either all
compiled or all interpreted, and a compiled module is never older than its source, so that a
stale ``.so`` (which Python loads in preference to the ``.py`` next to it) cannot pass for the
current code. In the default, pure Python install these hold trivially; they speak up when a
developer's tree holds a compiled build (protocol/README.md, "Compiled build")."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import protocol.codec
from protocol.build import COMPILED_MODULES, compiled_modules, is_compiled

ROOT = Path(__file__).resolve().parent.parent.parent
COMPILED_BY_SETUP = compiled_modules()
REBUILD = "rebuild (OCS_MYPYC=1 pip install -e .) or delete the .so files: protocol/README.md, 'Compiled build'"


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
