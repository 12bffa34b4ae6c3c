"""The money engine: balances, reservations and usage records in Redis, changed only by its
scripts (balance/RULES.md), and the clients that call them.

Some of its modules are compiled with mypyc in the default install (ocs/build.py names them).
With ``OCS_PURE_PYTHON=1`` in the environment (protocol/build.py: the pure-Python fallback) this
package's modules are imported from their ``.py`` sources even where compiled ones exist: a
finder for the package's directory that knows only sources, set before any of them is imported,
whatever imports the package first (balance imports neither ocs nor protocol, whose own switch
does the same for theirs).
"""

import os
import sys
from importlib.machinery import SOURCE_SUFFIXES, FileFinder, SourceFileLoader

if os.environ.get("OCS_PURE_PYTHON") == "1":
    sys.path_importer_cache[__path__[0]] = FileFinder(__path__[0], (SourceFileLoader, SOURCE_SUFFIXES))
