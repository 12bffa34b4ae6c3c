"""The opt-in compiled build (setup.py, OCS_MYPYC=1): the modules it compiles are either all
compiled or all interpreted, and a compiled module is never older than its source, so that a
stale ``.so`` (which Python loads in preference to the ``.py`` next to it) cannot pass for the
current code. In the default, pure Python install these hold trivially; they speak up when a
developer's tree holds a compiled build (protocol/README.md, "Compiled build")."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import protocol.avp_types
import protocol.codec
import protocol.constants
import protocol.dictionary
import protocol.grammar
import protocol.message

ROOT = Path(__file__).resolve().parent.parent.parent
# setup.py's COMPILED_MODULES, imported.
COMPILED_BY_SETUP = (
    protocol.constants,
    protocol.avp_types,
    protocol.dictionary,
    protocol.message,
    protocol.codec,
    protocol.grammar,
)
REBUILD = "rebuild (OCS_MYPYC=1 pip install -e .) or delete the .so files: protocol/README.md, 'Compiled build'"


def _loaded_from(module: ModuleType) -> Path:
    assert module.__file__ is not None
    return Path(module.__file__)


def _is_compiled(module: ModuleType) -> bool:
    return _loaded_from(module).suffix != ".py"


def test_setup_compiles_the_modules_listed_here() -> None:
    listed = [str(_loaded_from(module).with_suffix("").relative_to(ROOT)) for module in COMPILED_BY_SETUP]
    setup_source = (ROOT / "setup.py").read_text()
    for name in listed:
        stem = name.split(".")[0]
        assert f'"{stem}.py"' in setup_source, f"setup.py does not compile {stem}.py"


def test_the_codec_knows_whether_it_is_compiled() -> None:
    assert protocol.codec.MYPYC_COMPILED is _is_compiled(protocol.codec)


def test_all_or_none_of_the_modules_are_compiled() -> None:
    compiled = {module.__name__: _is_compiled(module) for module in COMPILED_BY_SETUP}
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
