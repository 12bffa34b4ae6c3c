"""A small client of the server's HTTP API (``ocs.api.server``), used by the CLI.

Theory of operation: one ``aiohttp.ClientSession`` per ``ApiClient`` (``async with``); each call
returns an ``ApiAnswer`` (status and JSON body) whatever the status, so the caller decides what a
refusal means. Only a server that cannot be reached (refused connection, timeout, a reply that
is not HTTP) raises ``ApiUnreachable``. Account ids are quoted into paths, never trusted raw.
Every request carries the bearer token given (``Authorization: Bearer``, RFC 6750 section 2.1);
an ``https://`` URL is verified against the system's CAs, or against ``ca_file`` when given (a
private CA, or the server's self-signed certificate itself).
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlencode

import aiohttp

DEFAULT_TIMEOUT_SECONDS = 30.0
BULK_TIMEOUT_SECONDS = 3_600.0  # a bulk load is applied row by row before the server answers


class ApiUnreachable(Exception):
    """No HTTP answer from the server (it may be down, or the URL wrong)."""


@dataclass(frozen=True, slots=True)
class ApiAnswer:
    status: int
    body: dict[str, object]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def error(self) -> str:
        message = self.body.get("error")
        return str(message) if message is not None else f"HTTP {self.status}"


def base_url(host: str, port: int, *, https: bool = False) -> str:
    """The API's URL from ``[http]`` host and port; a wildcard listen address is reached on loopback."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    scheme = "https" if https else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


class ApiClient:
    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        ca_file: str | None = None,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.ca_file = ca_file
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ApiClient:
        tls = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None
        connector = aiohttp.TCPConnector(ssl=tls) if tls is not None else None
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout_seconds), headers=self.headers, connector=connector
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, object] | None = None,
        data: bytes | None = None,
        content_type: str = "application/json",
        timeout_seconds: float | None = None,
    ) -> ApiAnswer:
        payload = json.dumps(body).encode() if body is not None else data
        status, content = await self._send(method, path, payload, content_type, timeout_seconds)
        return _answer(status, content)

    async def download(self, path: str) -> tuple[ApiAnswer, bytes]:
        """A GET whose answer is a file (a bill's document): its bytes, and the answer (the JSON
        error when refused; empty when it succeeded)."""
        status, content = await self._send("GET", path, None, "application/json", None)
        if 200 <= status < 300:
            return ApiAnswer(status, {}), content
        return _answer(status, content), b""

    async def _send(
        self, method: str, path: str, payload: bytes | None, content_type: str, timeout_seconds: float | None
    ) -> tuple[int, bytes]:
        if self._session is None:
            raise RuntimeError("use ApiClient in 'async with'")
        timeout = aiohttp.ClientTimeout(total=timeout_seconds or self.timeout_seconds)
        try:
            async with self._session.request(
                method, self.url + path, data=payload, headers={"Content-Type": content_type}, timeout=timeout
            ) as response:
                return response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError) as error:
            raise ApiUnreachable(f"cannot reach the server at {self.url}: {error or type(error).__name__}") from None

    # -- the API's operations -------------------------------------------------------------------

    async def create_subscriber(self, body: Mapping[str, object]) -> ApiAnswer:
        return await self.request("POST", "/subscribers", body=body)

    async def subscriber(self, account_id: str) -> ApiAnswer:
        return await self.request("GET", f"/subscribers/{_segment(account_id)}")

    async def balance(self, account_id: str) -> ApiAnswer:
        return await self.request("GET", f"/subscribers/{_segment(account_id)}/balance")

    async def set_status(self, account_id: str, status: str, reason: str = "") -> ApiAnswer:
        body = {"status": status, "reason": reason} if reason else {"status": status}
        return await self.request("PUT", f"/subscribers/{_segment(account_id)}/status", body=body)

    async def top_up(self, account_id: str, body: Mapping[str, object]) -> ApiAnswer:
        return await self.request("POST", f"/subscribers/{_segment(account_id)}/topups", body=body)

    async def adjust(self, account_id: str, body: Mapping[str, object]) -> ApiAnswer:
        return await self.request("POST", f"/subscribers/{_segment(account_id)}/adjustments", body=body)

    async def audit_trail(self, query: Mapping[str, str]) -> ApiAnswer:
        return await self.request("GET", "/audit-trail?" + urlencode(query) if query else "/audit-trail")

    async def load(self, csv_bytes: bytes) -> ApiAnswer:
        return await self.request(
            "POST", "/subscribers/load", data=csv_bytes, content_type="text/csv", timeout_seconds=BULK_TIMEOUT_SECONDS
        )


def _answer(status: int, content: bytes) -> ApiAnswer:
    text = content.decode("utf-8", errors="replace")
    try:
        decoded = json.loads(text) if text else {}
    except json.JSONDecodeError:
        decoded = {"error": f"HTTP {status}: {text[:200].strip()}"}
    return ApiAnswer(status, decoded if isinstance(decoded, dict) else {"value": decoded})


def _segment(account_id: str) -> str:
    return quote(account_id, safe="")
