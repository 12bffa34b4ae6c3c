"""What a call did and who made it, as the HTTP middleware (``ocs.api.server``) and the handlers of
every door share them: the authenticated caller is put on the request before its handler runs,
and a state-changing handler puts its ``Change`` there for the audit record written after it."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from ocs.api.access import Actor
from ocs.api.fields import BadInput


@dataclass(frozen=True, slots=True)
class Change:
    """What a state-changing handler did, for its audit record."""

    resource_id: str | None
    before: dict[str, object] | None
    after: dict[str, object] | None
    outcome: str = "applied"
    detail: str = ""


ACTOR = web.RequestKey("ocs_actor", Actor)  # the authenticated caller
CHANGE = web.RequestKey("ocs_change", Change)  # what its call changed


def record_change(request: web.Request, change: Change) -> None:
    request[CHANGE] = change


def actor_of(request: web.Request) -> Actor:
    return request[ACTOR]  # the middleware authorized the call: every route that calls this needs a token


def decode_csv(raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")  # spreadsheet exports often start with a byte order mark
    except UnicodeDecodeError as error:
        raise BadInput(f"the file is not UTF-8 (byte {error.start})") from None
