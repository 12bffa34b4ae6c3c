"""Where bill documents are kept: ``<data>/invoices/<YYYY>/<bill no>.html`` and ``.pdf``.

Theory of operation: the data directory is the server's (the directory of ``[spool] path``, which
also holds the SQLite business database and the audit fallback file). A document's year is its
bill date's, so a directory holds one year of bills and can be archived as a whole. Each file is
written atomically: the bytes go to a temporary file beside it, are flushed and fsynced, and the
temporary file is renamed over the final name (``os.replace``: atomic on POSIX), then the directory
is fsynced so the rename survives a power cut. A reader (a mailer, the API) therefore sees the old
file or the new one, never a part. Writing the same bytes again changes nothing a reader can see:
that is what lets a consumer that crashed render again. Files are made readable by the owner and
its group (``DOCUMENT_MODE``): they hold customer data. The calls are blocking file work: callers
on the event loop run them in a thread.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

from ocs.billing.documents import DocumentFormat
from ocs.billing.values import CustomerBill
from ocs.config import Settings

INVOICES_DIRECTORY = "invoices"
DOCUMENT_MODE = 0o640  # the owner writes; a mailer or print house in the server's group reads
# A bill number becomes a file name: the series' pattern (ocs.billing.values.SeriesName) and a
# sequence, so never a path separator or a leading dot. Checked again here before any file is made.
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def data_directory(settings: Settings) -> Path:
    """The server's data directory: where ``[spool] path`` lives (ocs/config.py ``SpoolSettings``)."""
    return Path(settings.spool.path).parent


class DocumentStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory  # the data directory

    def path(self, bill: CustomerBill, document_format: DocumentFormat) -> Path:
        if not _FILE_NAME.match(bill.bill_no):
            raise ValueError(f"bill_no: {bill.bill_no!r} cannot name a file")
        year = f"{bill.bill_date.year:04d}"
        return self.directory / INVOICES_DIRECTORY / year / f"{bill.bill_no}.{document_format.value}"

    def read(self, path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def write(self, path: Path, content: bytes) -> None:
        """``content`` at ``path``, atomically and durably (see the module docstring)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(handle, DOCUMENT_MODE)
            with os.fdopen(handle, "wb") as file:
                file.write(content)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
