"""Errors of the money engine: only infrastructure failures raise; business outcomes are values."""

from __future__ import annotations


class BalanceUnavailable(Exception):
    """Redis cannot be reached or did not answer; the operation's outcome is unknown (3004)."""


class BalanceScriptError(Exception):
    """A script refused to write because an invariant would break, or the key schema is
    inconsistent (a bug or corrupted data, never a business outcome); nothing was written."""


class DataDirectoryLocked(BalanceUnavailable):
    """Another process owns the embedded Redis data directory; two servers on one append-only file
    would each apply only their own writes, and their balances would diverge."""


class BalanceUnreached(BalanceUnavailable):
    """Nothing was sent to Redis (no connection, the client's pending bound, a closed client):
    the operation certainly did not apply, and no copy of it can apply later."""
