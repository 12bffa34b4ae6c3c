"""Diameter (RFC 6733, RFC 4006/8506, TS 32.299 Gy/Ro): a sans-IO core plus asyncio glue in ``aio``."""

from protocol.build import prefer_sources, pure_python_requested

if pure_python_requested():  # before the codec's modules are imported: protocol/build.py
    prefer_sources()

# The imports below come after the choice of build above.
from protocol.codec import Decoded, FrameReader, decode, encode
from protocol.constants import ApplicationId, CommandCode, CommandFlag, ResultCode
from protocol.dictionary import DEFAULT_DICTIONARY, Dictionary
from protocol.errors import Failure, PeerError
from protocol.message import Avp, Message, answer_to, avp, request

__all__ = [
    "DEFAULT_DICTIONARY",
    "ApplicationId",
    "Avp",
    "CommandCode",
    "CommandFlag",
    "Decoded",
    "Dictionary",
    "Failure",
    "FrameReader",
    "Message",
    "PeerError",
    "ResultCode",
    "answer_to",
    "avp",
    "decode",
    "encode",
    "request",
]
