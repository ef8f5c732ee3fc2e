"""The spool's files and its one decision (storage/spool.py), without PostgreSQL."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from storage.queue import QueuedItem
from storage.spool import Spool, batch_fate


def item(n: int, payload: bytes = b"") -> QueuedItem:
    return QueuedItem(7, 3, 11, "event", f"{n:032x}", dt.datetime(2026, 12, 7, tzinfo=dt.UTC),
                      payload or b'{"n": %d}' % n, {"client_ip": "10.0.0.1", "sdk": None})


def test_a_spooled_batch_reads_back_whole_with_the_transaction_it_may_be_in(
        tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    binary = bytes(range(256)) * 3
    spool.write([item(1), item(2, binary)], (123456789012, 4242))
    spool.write([item(3)], None)
    first, second = spool.batch_names()
    read = spool.read(first)
    assert read.ids == (123456789012, 4242)
    assert read.items == [item(1), item(2, binary)]
    assert spool.read(second).ids is None and spool.read(second).items == [item(3)]
    size = sum((tmp_path / "spool" / n).stat().st_size for n in (first, second))
    assert spool.bytes_and_items() == (size, 3)
    assert not [n for n in os.listdir(tmp_path / "spool") if n.endswith(".tmp")]


def test_a_batch_is_removed_before_the_attempt_that_names_it(tmp_path: Path) -> None:
    """An attempt file stays while any batch it names is left: a crash between removing
    a batch and its attempt never leaves a batch without the ids that say it was stored."""
    spool = Spool(tmp_path)
    spool.write([item(1)], None)
    spool.write([item(2)], (5, 6))
    a, b = spool.batch_names()
    spool.record_attempt([a, b], 900, 77)
    spool.record_attempt([b], 901, 78)
    assert spool.attempts() == {a: [(900, 77)], b: [(900, 77), (901, 78)]}
    spool.remove([a])
    assert spool.batch_names() == [b]
    assert spool.attempts()[b] == [(900, 77), (901, 78)]
    spool.remove([b])
    assert spool.attempts() == {} and spool.batch_names() == []
    assert sorted(os.listdir(tmp_path)) == []


def test_a_damaged_spool_file_is_refused_with_its_name_and_offset(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.write([item(1)], None)
    (name,) = spool.batch_names()
    data = (tmp_path / name).read_bytes()
    (tmp_path / name).write_bytes(data[:-3])
    with pytest.raises(ValueError, match=rf"spool file {name}: a frame of \d+ bytes at \d+"):
        spool.read(name)
    (tmp_path / name).write_bytes(b"something else")
    with pytest.raises(ValueError, match="not a Crashray spool file"):
        spool.read(name)


def test_one_drainer_per_directory(tmp_path: Path) -> None:
    spool, other = Spool(tmp_path), Spool(tmp_path)
    with spool.drain_lock() as mine:
        assert mine
        with other.drain_lock() as theirs:
            assert not theirs
    with other.drain_lock() as theirs:
        assert theirs


@pytest.mark.parametrize(("statuses", "fate"), [
    ([], "append"),                                   # spooled without a transaction
    (["aborted"], "append"),
    ([None], "append"),                               # unknown to the server
    (["in progress"], "wait"),
    (["aborted", "in progress"], "wait"),
    (["committed"], "stored"),
    (["aborted", "committed"], "stored"),
    (["in progress", "committed"], "stored"),
])
def test_a_batch_is_appended_only_when_no_transaction_may_still_have_stored_it(
        statuses: list[str | None], fate: str) -> None:
    assert batch_fate(statuses) == fate
