"""How fast our Diameter codec turns a Gy CCR into a message and its CCA into bytes, against
python-diameter doing the same in the same process.

Theory of operation: ``bench.gy_messages`` builds a realistic Gy CCR-UPDATE (Session-Id,
Origin-*, Destination-Realm, Auth-Application-Id, Service-Context-Id, CC-Request-Type/Number,
Subscription-Id E164 and IMSI, Multiple-Services-Indicator, two MSCCs with Rating-Group, RSU and
USU, Service-Information/PS-Information: 42 AVPs, 688 bytes) and its CCA. One "message" is what a
server does per request at the codec level: decode the CCR frame and encode the CCA.

- ours: ``protocol.codec.decode(frame)`` (message plus decode failures) and ``encode(cca)``.
- python-diameter: ``Message.from_bytes(frame)`` (a ``CreditControlRequest`` with its attributes
  filled in) and ``as_bytes()`` of a ``CreditControlAnswer`` holding the same CCA.

Before timing, the run checks that both sides read and write the same thing: python-diameter
finds our CCR's Session-Id, Subscription-Ids and MSCCs, and its CCA bytes decode with our codec
to our CCA (python-diameter clears the M bit of Origin-Host/Realm, which is all that differs).

Timing: the functions run in interleaved rounds (ours, theirs, ours, ...) of a batch sized to
about 5 ms each, and each figure is the best round, as ``timeit`` advises: on a shared machine
the minimum is the least disturbed measurement. The garbage collector is paused while timing,
as ``timeit`` does. ``grammar.validate`` of the CCR is printed too: it is not part of the
comparison (python-diameter has no grammar check) but runs on the server's hot path.

Our codec may run compiled with mypyc (the default install) or as pure Python (the fallback
of protocol/README.md, "Compiled build"); the run says which, judging by the files the hot-path
modules were loaded from, and says "mixed" when only some are compiled (stale ``.so`` files).

The last line is ``RESULT ours_us=<x> python_diameter_us=<x> ratio=<x>`` (decode CCR + encode
CCA, microseconds per message; ratio = python-diameter / ours); the line before it names the codec
measured.

Run from the project root: ``.venv/bin/python bench/codec.py [--rounds 100]`` (about 5 s).
"""

from __future__ import annotations

import argparse
import gc
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

# Run as a script, bench/ comes first on sys.path; the project root is what the imports need.
ROOT = Path(__file__).resolve().parent.parent
if sys.path and Path(sys.path[0]).resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)
elif str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from diameter.message import Message as TheirMessage  # type: ignore[import-untyped]  # noqa: E402

from bench.gy_messages import gy_cca_update, gy_ccr_update  # noqa: E402
from protocol.build import codec_build  # noqa: E402
from protocol.codec import decode, encode  # noqa: E402
from protocol.constants import ApplicationId  # noqa: E402
from protocol.grammar import validate  # noqa: E402
from protocol.message import Avp, Message  # noqa: E402

TARGET_MICROSECONDS = 15.0  # the issue: decode CCR + encode CCA <= 15 us per message
TARGET_RATIO = 25.0  # ... and at least 25 times faster than python-diameter
BATCH_SECONDS = 0.005
APPLICATIONS = {int(ApplicationId.DIAMETER_COMMON_MESSAGES), int(ApplicationId.CREDIT_CONTROL)}


BUILD_DESCRIPTIONS = {
    "pure": "pure Python",
    "compiled": "compiled with mypyc",
    "mixed": "MIXED, some modules compiled and some not (stale .so files? see protocol/README.md)",
}


def _without_m_bit_of_origin(avps: list[Avp]) -> list[tuple[int, int, int, object]]:
    origin = {264, 296}  # Origin-Host, Origin-Realm: python-diameter sends them without M
    return [
        (
            item.code,
            item.flags & ~0x40 if item.code in origin else item.flags,
            item.vendor_id,
            _without_m_bit_of_origin(item.value) if isinstance(item.value, list) else item.value,
        )
        for item in avps
    ]


def check_both_sides(ccr_frame: bytes, cca: Message) -> TheirMessage:
    """Fail loudly unless both codecs read and write the same messages; return their CCA."""
    decoded = decode(ccr_frame)
    assert decoded.failures == [], decoded.failures
    assert validate(decoded.message, APPLICATIONS) == []
    assert decode(encode(cca)).message == cca

    their_ccr = TheirMessage.from_bytes(ccr_frame)
    assert type(their_ccr).__name__ == "CreditControlRequest"
    assert their_ccr.session_id == decoded.message.get("Session-Id")
    assert [s.subscription_id_data for s in their_ccr.subscription_id] == ["491700000042", "262010000000042"]
    assert [m.rating_group for m in their_ccr.multiple_services_credit_control] == [10, 20]
    assert their_ccr.service_information.ps_information.called_station_id == "internet"

    their_cca = TheirMessage.from_bytes(encode(cca))
    assert type(their_cca).__name__ == "CreditControlAnswer"
    reread = decode(their_cca.as_bytes()).message
    assert _without_m_bit_of_origin(reread.avps) == _without_m_bit_of_origin(cca.avps)
    return their_cca


def batch_size(function: Callable[[], object]) -> int:
    start = time.perf_counter()
    function()
    once = max(time.perf_counter() - start, 1e-7)
    return max(1, int(BATCH_SECONDS / once))


def best_microseconds(functions: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Best per-call time of each function over interleaved rounds."""
    sizes = {name: batch_size(function) for name, function in functions.items()}
    best = dict.fromkeys(functions, float("inf"))
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(rounds):
            for name, function in functions.items():
                count = sizes[name]
                start = time.perf_counter()
                for _ in range(count):
                    function()
                elapsed = (time.perf_counter() - start) / count * 1e6
                best[name] = min(best[name], elapsed)
    finally:
        if gc_was_enabled:
            gc.enable()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100, help="interleaved timing rounds (best one counts)")
    arguments = parser.parse_args()

    ccr = gy_ccr_update()
    ccr_frame = encode(ccr)
    cca = gy_cca_update(decode(ccr_frame).message)
    their_cca = check_both_sides(ccr_frame, cca)
    decoded_ccr = decode(ccr_frame).message

    def ours() -> None:
        decode(ccr_frame)
        encode(cca)

    def theirs() -> None:
        TheirMessage.from_bytes(ccr_frame)
        their_cca.as_bytes()

    best = best_microseconds(
        {
            "ours": ours,
            "ours decode": lambda: decode(ccr_frame),
            "ours encode": lambda: encode(cca),
            "ours validate": lambda: validate(decoded_ccr, APPLICATIONS),
            "theirs": theirs,
            "theirs decode": lambda: TheirMessage.from_bytes(ccr_frame),
            "theirs encode": their_cca.as_bytes,
        },
        arguments.rounds,
    )
    ratio = best["theirs"] / best["ours"]
    build = codec_build()
    print(
        f"CPython {platform.python_version()}; our codec: {BUILD_DESCRIPTIONS[build]}; "
        f"CCR {len(ccr_frame)} bytes, CCA {len(encode(cca))} bytes; "
        f"best of {arguments.rounds} interleaved rounds, microseconds per message"
    )
    print(
        f"ours             decode CCR {best['ours decode']:7.2f}  encode CCA {best['ours encode']:7.2f}  "
        f"together {best['ours']:7.2f}"
    )
    print(
        f"python-diameter  decode CCR {best['theirs decode']:7.2f}  encode CCA {best['theirs encode']:7.2f}  "
        f"together {best['theirs']:7.2f}"
    )
    print(f"ours grammar.validate of the CCR (server hot path, not in RESULT): {best['ours validate']:.2f} us")
    met = best["ours"] <= TARGET_MICROSECONDS and ratio >= TARGET_RATIO
    print(
        f"target <= {TARGET_MICROSECONDS:g} us and >= {TARGET_RATIO:g}x python-diameter: "
        f"{'met' if met else 'NOT met'} ({best['ours']:.2f} us, {ratio:.1f}x)"
    )
    print(f"codec measured: {build}")
    print(f"RESULT ours_us={best['ours']:.2f} python_diameter_us={best['theirs']:.2f} ratio={ratio:.1f}")


if __name__ == "__main__":
    main()
