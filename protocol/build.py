"""Which build of the codec is running: compiled with mypyc (the default install, setup.py), or
pure Python (``OCS_MYPYC=0`` at install, or ``OCS_PURE_PYTHON=1`` when running), protocol/README.md
"Compiled build".

Theory of operation: ``COMPILED_MODULES`` names the hot-path modules setup.py compiles (a test
holds the two lists together). A compiled module is loaded from an extension file instead of its
``.py``; ``codec_build`` looks at where each was loaded from and says "compiled" (all), "pure"
(none) or "mixed" (some: stale ``.so`` files, which Python prefers to the sources next to them).

The pure-Python fallback must keep passing the tests on a machine that has the compiled build, so
``prefer_sources`` (called by ``protocol/__init__.py`` when ``OCS_PURE_PYTHON=1`` is in the
environment, before any of these modules is imported) puts a finder in front of the import system
that loads these modules from their ``.py`` files; everything else imports as usual.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Iterable, Sequence
from types import ModuleType

COMPILED_MODULES = (
    "protocol.constants",
    "protocol.avp_types",
    "protocol.dictionary",
    "protocol.message",
    "protocol.codec",
    "protocol.encoded",
    "protocol.grammar",
    "protocol.pending",
    "protocol.duplicates",
    "protocol.watchdog",
    "protocol.peer",
    "protocol.aio.transport",
    "protocol.aio.tls",
    "protocol.aio.server",
)


PURE_PYTHON_VARIABLE = "OCS_PURE_PYTHON"  # "1": run the interpreted sources even where compiled ones exist


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Finds the ``.py`` sources of the modules it names, never their extension files."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.names:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None or spec.origin.endswith(".py"):
            return spec
        directory, _, _ = spec.origin.rpartition("/")
        package = spec.submodule_search_locations is not None
        source = f"{directory}/__init__.py" if package else f"{directory}/{fullname.rpartition('.')[2]}.py"
        loader = importlib.machinery.SourceFileLoader(fullname, source)
        return importlib.util.spec_from_file_location(
            fullname, source, loader=loader, submodule_search_locations=[directory] if package else None
        )


def prefer_sources(names: Iterable[str] = COMPILED_MODULES) -> None:
    """Import these compiled modules from their sources from now on (``OCS_PURE_PYTHON=1``); the
    application's own compiled modules (``ocs/build.py``) are added by ``ocs/__init__.py``."""
    finder = next((finder for finder in sys.meta_path if isinstance(finder, _SourceFinder)), None)
    if finder is None:
        finder = _SourceFinder()
        sys.meta_path.insert(0, finder)
    finder.names.update(names)


def pure_python_requested() -> bool:
    return os.environ.get(PURE_PYTHON_VARIABLE) == "1"


def compiled_modules() -> tuple[ModuleType, ...]:
    return tuple(importlib.import_module(name) for name in COMPILED_MODULES)


def is_compiled(module: ModuleType) -> bool:
    return not str(module.__file__).endswith(".py")


def codec_build() -> str:
    compiled = [is_compiled(module) for module in compiled_modules()]
    return "compiled" if all(compiled) else "mixed" if any(compiled) else "pure"
