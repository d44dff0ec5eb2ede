"""The broadcast core (les02_flow.broadcast) with in-memory transports: batches, filters, policy."""

from __future__ import annotations

import logging

from les02_flow.broadcast import Broadcaster
from les02_flow.node import Counters


class Fake:
    """A transport that records its writes; ``behind`` makes it not ready."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.behind = False
        self.kicked = ""

    def ready(self) -> bool:
        return not self.behind

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def kick(self, reason: str) -> None:
        self.kicked = reason


def _core(limit: int = 100, policy: str = "drop_oldest", slack: int = 0) -> Broadcaster[Fake]:
    return Broadcaster(
        Counters(),
        logging.getLogger("test-broadcast"),
        limit=limit,
        policy=policy,  # type: ignore[arg-type]
        max_clients=10,
        slack=slack,
    )


def test_a_batch_is_one_write_per_client_joined_once_per_filter() -> None:
    core = _core()
    a, b, c = Fake(), Fake(), Fake()
    core.admit(a, "a")
    core.admit(b, "b")
    core.admit(c, "c", topics=frozenset({"ride_end"}))
    items = [b"p1", b"e1", b"p2", b"e2"]
    types = ["position_sample", "ride_end", "position_sample", "ride_end"]
    assert core.publish_many(items, types) is True
    assert core.flush() == 4 + 4 + 2
    assert a.writes == [b"p1e1p2e2"]
    assert b.writes == [b"p1e1p2e2"]
    assert a.writes[0] is b.writes[0]  # the same bytes for every unfiltered client
    assert c.writes == [b"e1e2"]
    assert core.counters.emitted == 10
    # per-client totals (the disconnect line) count messages, not chunks
    clients = {cl.peer: cl for cl in core}
    assert clients["a"].queue.sent == 4 and clients["c"].queue.sent == 2


def test_a_batch_nobody_wants_queues_nothing() -> None:
    core = _core()
    f = Fake()
    core.admit(f, "f", topics=frozenset({"ride_end"}))
    assert core.wants("ride_end") and not core.wants("position_sample")
    assert core.publish_many([b"p"], ["position_sample"]) is False
    assert core.publish_many([], []) is False
    assert core.flush() == 0 and f.writes == []


def test_a_client_that_is_behind_keeps_its_batches_and_drops_the_oldest() -> None:
    core = _core(limit=5)
    slow, fast = Fake(), Fake()
    core.admit(slow, "slow")
    core.admit(fast, "fast")
    slow.behind = True
    [client] = [cl for cl in core if cl.peer == "slow"]
    client.queue.pause()  # what the adapter does when its transport is above the mark
    for i in range(4):
        batch = [b"%d." % (3 * i + k) for k in range(3)]
        core.publish_many(batch, ["position_sample"] * 3)
        core.flush()
    assert len(fast.writes) == 4 and slow.writes == []
    # 12 messages in chunks of 3, bound 5: only the newest chunk fits beside the next one
    assert client.queue.dropped == 9
    assert core.counters.dropped == 9
    slow.behind = False
    assert core.write_backlog(client) == 3
    assert slow.writes == [b"9.10.11."]


def test_overflow_under_disconnect_kicks_only_that_client() -> None:
    core = _core(limit=2, policy="disconnect", slack=8)  # a client that keeps up: +8
    slow, fast = Fake(), Fake()
    core.admit(slow, "slow")
    core.admit(fast, "fast")
    [client] = [cl for cl in core if cl.peer == "slow"]
    client.queue.pause()
    slow.behind = True
    core.publish_many([b"1", b"2", b"3"], ["x"] * 3)
    assert slow.kicked.startswith("too slow")
    assert len(core) == 1 and fast.kicked == ""
    core.flush()
    assert fast.writes == [b"123"]
