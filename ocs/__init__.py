"""The online charging server application."""

from ocs.build import COMPILED_MODULES
from protocol.build import prefer_sources, pure_python_requested

if pure_python_requested():  # before any of them is imported: ocs/build.py
    prefer_sources(COMPILED_MODULES)
