"""Request bodies of the HTTP API, read so that no request holds the event loop that also answers
Diameter: bounded per endpoint, read chunk by chunk, refused with 413 as soon as they are over (or
before they are sent, for a client that asks ``Expect: 100-continue``); a small JSON body is parsed
in place, with numbers kept exact (``Decimal``) and errors as 400 naming what is wrong.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import NoReturn

from aiohttp import web

from ocs.api.fields import ApiError, BadInput, Fields

# Bodies are bounded per endpoint and read in chunks, each one a chance for the event loop to
# answer CCRs: a JSON request is a few hundred bytes, so 64 KiB is generous; a bulk file of about
# 150,000 subscribers (~100 bytes a row) fits in 16 MiB, and larger ones go as several loads. A
# body declared larger (Content-Length) is refused before any of it is read, even before the
# client sends it when it asked ``Expect: 100-continue`` (RFC 9110 section 10.1.1).
MAX_JSON_BODY_BYTES = 64 * 1024
MAX_LOAD_BODY_BYTES = 16 * 1024 * 1024
BODY_LIMITS = {"/subscribers/load": MAX_LOAD_BODY_BYTES}  # by route template; others: the JSON limit


def error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": message, "code": code}, status=status)


class TooLarge(ApiError):
    status = 413
    code = "too_large"


def body_limit(request: web.Request) -> int:
    resource = request.match_info.route.resource
    return BODY_LIMITS.get(resource.canonical if resource is not None else "", MAX_JSON_BODY_BYTES)


def too_large(request: web.Request, limit: int) -> TooLarge:
    return TooLarge(f"the body of {request.method} {request.path} may be at most {limit} bytes ({limit // 1024} KiB)")


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """``Expect: 100-continue``: refuse a declared oversize body before the client sends it."""
    if request.headers.get("Expect", "").lower() != "100-continue":
        return error_response(417, "http", "the only expectation understood is 100-continue")  # RFC 9110 section 10.1.1
    limit = body_limit(request)
    if request.content_length is not None and request.content_length > limit:
        error = too_large(request, limit)
        return error_response(error.status, error.code, error.message)
    if request.version >= (1, 1):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    return None


async def read_body(request: web.Request) -> bytes:
    """The body, read chunk by chunk up to the route's limit: 413 once it is over, without reading
    the rest (aiohttp then discards what the client still sends, for at most its lingering time)."""
    limit = body_limit(request)
    if request.content_length is not None and request.content_length > limit:
        raise too_large(request, limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise too_large(request, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _refuse_constant(name: str) -> NoReturn:
    raise BadInput(f"{name} is not a number JSON allows")


async def json_fields(request: web.Request) -> Fields:
    return Fields(await json_value(request))


async def json_value(request: web.Request) -> object:
    raw = await read_body(request)  # at most MAX_JSON_BODY_BYTES: parsed here in well under a millisecond
    try:
        value = json.loads(raw.decode("utf-8"), parse_float=Decimal, parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise BadInput("the body is not UTF-8") from None
    except json.JSONDecodeError as error:
        raise BadInput(f"the body is not JSON: {error}") from None
    except RecursionError:  # the parser recurses per level ([[[[...); no request nests beyond 4
        raise BadInput("the body nests arrays or objects too deeply to be a request") from None
    return value
