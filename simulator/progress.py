"""Live progress of a run on stderr: a rich progress bar on a terminal, plain lines otherwise.

Theory of operation: ``live_progress`` yields the callback the runner calls with a line of text
and, while traffic runs, how far it is (0..1). On a terminal, rich draws one bar whose
description is the latest line (arrivals, sessions, requests) and keeps lines without a
fraction (provisioning, auditing) above it; in a pipe or a CI log every call is one plain line.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from simulator.runner import Progress as ProgressCallback


@contextmanager
def live_progress(title: str) -> Iterator[ProgressCallback]:
    console = Console(stderr=True)
    if not console.is_terminal:

        def plain(line: str, done: float | None) -> None:
            print(line, file=sys.stderr, flush=True)

        yield plain
        return
    columns = (TextColumn(f"[bold]{title}[/]"), BarColumn(), TimeElapsedColumn(), TextColumn("{task.description}"))
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("starting", total=1.0)

        def show(line: str, done: float | None) -> None:
            if done is None:
                bar.console.print(line)
            else:
                bar.update(task, description=line, completed=done)

        yield show
