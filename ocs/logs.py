"""Logging: structlog, JSON lines by default, with the request's context bound.

Theory of operation: ``configure_logging`` is called once by ``ocs serve``. Every request task
binds its Session-Id, CC-Request-Number and peer through structlog's context variables
(``structlog.contextvars``), so every line logged while answering it carries them without
passing them around. ``json_lines=False`` gives the console renderer for people at a terminal.
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(*, json_lines: bool = True, level: int = logging.INFO) -> None:
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
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
