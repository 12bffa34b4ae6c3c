"""Logging: structlog, JSON lines by default, with the request's context bound.

Theory of operation: ``configure_logging`` is called once by ``ocs serve``. Every request task
binds its Session-Id, CC-Request-Number and peer through structlog's context variables
(``structlog.contextvars``), so every line logged while answering it carries them without
passing them around; ``stream`` sends them to a file instead of stderr (``ocs demo``).
``json_lines=False`` gives the console renderer for people at a terminal.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog


def configure_logging(*, json_lines: bool = True, level: int = logging.INFO, stream: TextIO | None = None) -> None:
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=True,
    )
