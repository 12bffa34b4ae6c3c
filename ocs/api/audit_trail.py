"""Writing the audit trail so that no record is lost silently, even when the database is not there.

Theory of operation: a state-changing API call is applied to Redis first; its audit record
(``ocs.db.audit``) is written in the same request once the outcome is known. By then the change
has happened, so a failed write must not turn it into an error answer (a client would believe
nothing was applied, and an operator would look for a change that is in fact there). Instead:

1. the insert is tried ``WRITE_ATTEMPTS`` times with short pauses (a locked SQLite file, a
   PostgreSQL failover);
2. then the record is appended as one JSON line to the fallback file (``audit-pending.jsonl``
   beside the database's default file), logged at error level with the whole record, and counted
   in ``ocs_audit_write_failures_total`` (an alert on it tells the operator);
3. at the next start (``recover``) the fallback file's records are inserted in one transaction
   and the file removed, so the trail in the database is complete again; a file that cannot be
   imported stays where it is, and the server says so.

Should the fallback file itself be unwritable, the error log line carries the whole record: the
last copy, and the reason the alert fired.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path

import structlog
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy.ext.asyncio import AsyncEngine

from ocs.db import audit
from ocs.db.audit import AuditEntry

log = structlog.get_logger("ocs.audit")

WRITE_ATTEMPTS = 3
WRITE_PAUSE_SECONDS = 0.05  # doubled after each failure: 50 ms, 100 ms; the client is waiting
FALLBACK_FILE_NAME = "audit-pending.jsonl"


def _line(entry: AuditEntry) -> str:
    values = entry.as_json()
    return json.dumps(values, separators=(",", ":"), sort_keys=True) + "\n"


def _entry_of(line: str) -> AuditEntry:
    values = json.loads(line)
    actor = values["actor"]
    return AuditEntry(
        occurred_at=datetime.fromisoformat(values["occurred_at"]),
        token_id=actor["token_id"],
        actor_name=actor["name"],
        actor_role=actor["role"],
        method=values["method"],
        route=values["route"],
        resource_id=values["resource_id"],
        status=values["status"],
        outcome=values["outcome"],
        before=values["before"],
        after=values["after"],
        detail=values["detail"],
    )


class AuditTrail:
    def __init__(self, engine: AsyncEngine, fallback_path: Path, registry: CollectorRegistry | None = None) -> None:
        self.engine = engine
        self.fallback_path = fallback_path
        self.failures = Counter(
            "ocs_audit_write_failures_total",
            "Audit records the database did not take; kept in the fallback file until the next start",
            registry=registry,
        )

    async def write(self, entry: AuditEntry) -> bool:
        """Record ``entry``; False when it went to the fallback file (or only to the log)."""
        pause = WRITE_PAUSE_SECONDS
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                await audit.record(self.engine, [entry])
                return True
            except Exception as error:
                if attempt == WRITE_ATTEMPTS:
                    await self._fall_back(entry, error)
                    return False
                await asyncio.sleep(pause)
                pause *= 2
        return False  # not reached: the loop returns on its last attempt

    async def _fall_back(self, entry: AuditEntry, error: Exception) -> None:
        self.failures.inc()
        kept = str(self.fallback_path)
        try:
            await asyncio.to_thread(self._append, _line(entry))
        except OSError as file_error:
            kept = f"nowhere but this log line ({file_error})"
        log.error("audit_write_failed", error=str(error), kept_in=kept, record=entry.as_json())

    def _append(self, line: str) -> None:
        self.fallback_path.parent.mkdir(parents=True, exist_ok=True)
        with self.fallback_path.open("a", encoding="utf-8") as file:
            file.write(line)
            file.flush()

    async def recover(self) -> int:
        """Insert the records the fallback file kept, then remove it; how many were inserted."""
        if not self.fallback_path.exists():
            return 0
        try:
            text = await asyncio.to_thread(self.fallback_path.read_text, encoding="utf-8")
            entries = [_entry_of(line) for line in text.splitlines() if line.strip()]
            await audit.record(self.engine, entries)
        except Exception as error:
            log.error("audit_recovery_failed", file=str(self.fallback_path), error=str(error))
            return 0
        self.fallback_path.unlink()
        log.warning("audit_records_recovered", count=len(entries), file=str(self.fallback_path))
        return len(entries)
