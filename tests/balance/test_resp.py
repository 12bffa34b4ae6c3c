"""The pipelined client's RESP packing (balance/resp.py) against hiredis's ``pack_command``, the
packer it replaces: the same bytes for every command the hot path sends, lengths past the table
of prepared headers (a script's source) included, and a part of another type refused by name."""

from __future__ import annotations

import hiredis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from balance import resp

_parts = st.lists(st.one_of(st.binary(max_size=1100), st.text(max_size=400), st.integers()), max_size=40)


def _hiredis(*parts: resp.CommandPart) -> bytes:
    return hiredis.pack_command(parts)  # type: ignore[arg-type]  # its stub takes one part only


@given(_parts)
def test_a_command_packs_as_hiredis_packs_it(parts: list[resp.CommandPart]) -> None:
    assert resp.pack([b"SET", *parts]) == _hiredis(b"SET", *parts)


@given(st.text(min_size=1, max_size=60), _parts, _parts)
def test_a_prepared_call_packs_as_the_whole_command(
    function: str, keys: list[resp.CommandPart], args: list[resp.CommandPart]
) -> None:
    prepared = resp.prepare(b"FCALL", function)
    assert resp.pack_call(prepared, keys, args) == _hiredis(b"FCALL", function, len(keys), *keys, *args)


def test_counts_and_lengths_past_the_table() -> None:
    source = "x" * 70_000
    assert resp.pack((b"SCRIPT", b"LOAD", source)) == _hiredis(b"SCRIPT", b"LOAD", source)
    many = [str(index) for index in range(1500)]
    prepared = resp.prepare(b"EVALSHA", "0" * 40)
    assert resp.pack_call(prepared, many, many) == _hiredis(b"EVALSHA", "0" * 40, 1500, *many, *many)


def test_a_part_of_another_type_is_refused() -> None:
    with pytest.raises(TypeError, match="float"):
        resp.pack((b"SET", 1.5))  # type: ignore[arg-type]
