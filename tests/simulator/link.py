"""A TCP proxy between the simulator and the real server that fails the way a server does.

Theory of operation: ``Link`` listens on a loopback port and pipes every connection to the
server's port. The test then makes it fail as a crashing or hanging server would, as seen from
the client:

- ``cut()``: every connection is aborted (no DPR, no FIN) and new ones are refused, as when the
  server process dies; ``restore()`` listens again on the same port, as a restarted server does;
- ``lose_answers``: Credit-Control answers are dropped on their way back, as when the server
  applied a request and died before its answer left;
- ``swallow_requests``: Credit-Control requests are dropped on their way in, as when the server
  hangs: nothing is applied, nothing answered.

With ``diameter=True`` the pipes read whole Diameter messages (RFC 6733 section 3: the length is
in the header's bytes 1-3) so a dropped message never leaves half a message in the stream; other
messages (CER, DWR, DPR) always pass. Without it (HTTP) bytes pass as they come.
"""

from __future__ import annotations

import asyncio
import contextlib

HEADER_BYTES = 20  # RFC 6733 section 3
CREDIT_CONTROL = 272  # RFC 4006 section 3.1
REQUEST_FLAG = 0x80  # RFC 6733 section 3, the R bit of the command flags


class Link:
    def __init__(self, upstream_port: int, *, diameter: bool) -> None:
        self.upstream_port = upstream_port
        self.diameter = diameter
        self.port = 0
        self.lose_answers = False
        self.swallow_requests = False
        self.requests_in = 0  # client writes forwarded (HTTP chunks, or Diameter requests)
        self._listener: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._listener = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._listener.sockets[0].getsockname()[1]
        return self.port

    def cut(self) -> None:
        """Abort every connection and refuse new ones."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def restore(self) -> None:
        await self.start()

    async def close(self) -> None:
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers.update((client_writer, server_writer))
        pipes = [
            asyncio.create_task(self._pipe(client_reader, server_writer, inward=True)),
            asyncio.create_task(self._pipe(server_reader, client_writer, inward=False)),
        ]
        self._tasks.update(pipes)
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        for task in pipes:
            task.cancel()
        for writer in (client_writer, server_writer):
            writer.transport.abort()
            self._writers.discard(writer)
        self._tasks.difference_update(pipes)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, inward: bool) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                data = await (self._message(reader) if self.diameter else reader.read(65_536))
                if not data:
                    return
                if self.diameter and self._dropped(data, inward=inward):
                    continue
                if inward:
                    self.requests_in += 1
                writer.write(data)
                await writer.drain()

    @staticmethod
    async def _message(reader: asyncio.StreamReader) -> bytes:
        header = await reader.readexactly(HEADER_BYTES)
        length = int.from_bytes(header[1:4], "big")
        return header + await reader.readexactly(length - HEADER_BYTES)

    def _dropped(self, message: bytes, *, inward: bool) -> bool:
        if int.from_bytes(message[5:8], "big") != CREDIT_CONTROL:
            return False
        is_request = bool(message[4] & REQUEST_FLAG)
        return (inward and is_request and self.swallow_requests) or (
            not inward and not is_request and self.lose_answers
        )
