"""asyncio glue for the sans-IO peer: the only part of protocol/ that touches sockets and loops."""

from protocol.aio.client import DiameterClient, RequestFailed
from protocol.aio.server import DiameterServer
from protocol.aio.transport import DiameterTransport

__all__ = ["DiameterClient", "DiameterServer", "DiameterTransport", "RequestFailed"]
