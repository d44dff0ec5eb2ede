"""Spool: plain class, real files (no broker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from les02_flow.nodes.mqtt.spool import Spool, SpoolError


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(
    path: Path | None,
    clock: Clock | None = None,
    max_bytes: int = 1 << 20,
    max_age: float = 3600.0,
    segment_bytes: int = 1 << 20,
) -> Spool:
    return Spool(
        path,
        clock=clock or Clock(),
        max_bytes=max_bytes,
        max_age=max_age,
        segment_bytes=segment_bytes,
    )


def test_order_ack_rewind_in_memory() -> None:
    sp = make(None)
    seqs = [sp.append("t", f"m{i}".encode()) for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    assert [r.payload for r in sp.next_unsent(2)] == [b"m0", b"m1"]
    assert [r.payload for r in sp.next_unsent(10)] == [b"m2", b"m3", b"m4"]
    assert sp.next_unsent(10) == []
    sp.ack(1)
    sp.ack(3)
    assert sp.pending == 3
    sp.rewind()
    # 3 was acknowledged out of order: not sent again
    assert [r.seq for r in sp.next_unsent(10)] == [2, 4, 5]
    for s in (2, 4, 5):
        sp.ack(s)
    assert sp.pending == 0 and sp.pending_bytes == 0


def test_size_limit_drops_oldest_and_counts() -> None:
    sp = make(None, max_bytes=1000)
    for i in range(50):
        sp.append("les02/a/b/ride_end", bytes(60) + str(i).encode())
    assert sp.pending_bytes <= 1000
    kept = sp.next_unsent(100)
    assert kept[-1].payload.endswith(b"49")
    assert sp.dropped == 50 - len(kept) > 0
    assert sp.take_dropped() == sp.dropped and sp.take_dropped() == 0
    # kept are the newest, contiguous
    assert [r.seq for r in kept] == list(range(51 - len(kept), 51))


def test_age_limit(tmp_path: Path) -> None:
    clock = Clock()
    sp = make(tmp_path, clock, max_age=10.0)
    sp.append("t", b"old")
    clock.t += 6
    sp.append("t", b"new")
    clock.t += 6
    sp.flush()
    assert [r.payload for r in sp.next_unsent(10)] == [b"new"]
    assert sp.dropped == 1


def test_survives_restart_and_keeps_seq(tmp_path: Path) -> None:
    sp = make(tmp_path)
    for i in range(10):
        sp.append("les02/s/x/ride_end", f"m{i}".encode())
    for r in sp.next_unsent(4):
        sp.ack(r.seq)
    sp.flush()
    sp.append("t", b"never flushed")  # lost by a crash now: only the flush window
    again = make(tmp_path)
    got = again.next_unsent(100)
    assert [r.payload for r in got] == [f"m{i}".encode() for i in range(4, 10)]
    assert again.recovered == 6
    assert again.next_seq == 11
    assert again.append("t", b"after") == 11
    for r in got:
        again.ack(r.seq)
    again.flush()
    third = make(tmp_path)
    assert [r.payload for r in third.next_unsent(100)] == [b"after"]


def test_torn_tail_is_cut_and_reported(tmp_path: Path) -> None:
    sp = make(tmp_path)
    for i in range(3):
        sp.append("t", f"m{i}".encode())
    sp.flush()
    seg = next(tmp_path.glob("*.seg"))
    data = seg.read_bytes()
    seg.write_bytes(data[:-3])  # a crash in the middle of the last write
    again = make(tmp_path)
    assert [r.payload for r in again.next_unsent(10)] == [b"m0", b"m1"]
    assert any("torn record" in n for n in again.recovery_notes)


def test_corrupt_record_detected(tmp_path: Path) -> None:
    sp = make(tmp_path)
    for i in range(3):
        sp.append("t", f"m{i}".encode())
    sp.flush()
    seg = next(tmp_path.glob("*.seg"))
    data = bytearray(seg.read_bytes())
    data[-1] ^= 0xFF
    seg.write_bytes(bytes(data))
    again = make(tmp_path)
    assert len(again.next_unsent(10)) == 2
    assert any("checksum" in n for n in again.recovery_notes)


def test_segments_rotate_and_are_deleted_when_done(tmp_path: Path) -> None:
    sp = make(tmp_path, segment_bytes=200)
    for i in range(20):
        sp.append("t", bytes(50) + bytes([i]))
        sp.flush()
    assert len(list(tmp_path.glob("*.seg"))) > 3
    for r in sp.next_unsent(100):
        sp.ack(r.seq)
    sp.flush()
    assert list(tmp_path.glob("*.seg")) == []
    assert make(tmp_path).pending == 0
    assert make(tmp_path).next_seq == 21


def test_unusable_directory(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(SpoolError, match="cannot use spool directory"):
        make(f / "spool")


def test_needs_flush_only_with_something_to_write(tmp_path: Path) -> None:
    sp = make(tmp_path)
    assert not sp.needs_flush()
    sp.append("t", b"x")
    assert sp.needs_flush()
    sp.flush()
    assert not sp.needs_flush()
    sp.ack(sp.next_unsent(1)[0].seq)
    assert sp.needs_flush()  # the acknowledged mark must reach the disk
    sp.flush()
    assert not sp.needs_flush()
    assert not make(None).needs_flush()


def test_spool_id_survives_restart_and_a_new_spool_gets_a_new_one(tmp_path: Path) -> None:
    a = make(tmp_path / "a")
    assert len(a.id) == 8 and make(tmp_path / "a").id == a.id
    assert make(tmp_path / "b").id != a.id
    assert make(None).id != make(None).id
